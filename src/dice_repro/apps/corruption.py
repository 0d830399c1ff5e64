"""Corrupted training data for the application experiments: a malicious batch, or a node with harmful data.

A corruption never edits the original samples. It appends a corrupted *copy* of the targeted samples to
the training set and points the targeted schedule entries at the copy, so the same sample stays clean
wherever else the schedule uses it, and the engine trains on the result unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from dice_repro.engine import Problem

KINDS = ("label_permutation", "random_labels", "gaussian_noise")


@dataclass(frozen=True)
class Corruption:
    """What is done to the targeted samples; ``noise_std`` is used by ``gaussian_noise`` only."""

    kind: str
    noise_std: float = 100.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown corruption kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "gaussian_noise" and not self.noise_std > 0:
            raise ValueError(f"gaussian_noise needs a positive noise_std, got {self.noise_std}")

    @classmethod
    def parse(cls, text: str) -> "Corruption":
        """``kind`` or ``gaussian_noise:STD`` (e.g. ``gaussian_noise:100``), the form the CLI takes."""
        kind, _, std = text.partition(":")
        if std and kind != "gaussian_noise":
            raise ValueError(f"corruption {text!r}: only gaussian_noise takes a ':STD' suffix")
        try:
            return cls(kind, float(std)) if std else cls(kind)
        except ValueError as exc:
            raise ValueError(f"corruption {text!r}: {exc}") from None

    @property
    def label(self) -> str:
        """A short name for tables and figures, e.g. ``gaussian_noise(std=100)``."""
        return f"gaussian_noise(std={self.noise_std:g})" if self.kind == "gaussian_noise" else self.kind


def corrupt_samples(
    x: torch.Tensor, y: torch.Tensor, corruption: Corruption, num_classes: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupted copies of samples ``(x[B, ...], y[B])``, drawn from ``gen`` (a CPU generator).

    ``label_permutation`` shuffles the labels among the samples and redraws until at least one label
    changes (possible whenever two classes are present); ``random_labels`` draws every label uniformly
    over the classes; ``gaussian_noise`` adds ``N(0, noise_std²)`` to the normalised inputs.
    """
    if corruption.kind == "label_permutation":
        if y.unique().numel() < 2:
            return x.clone(), y.clone()
        while True:
            perm = torch.randperm(y.shape[0], generator=gen).to(y.device)
            if bool((y[perm] != y).any()):
                return x.clone(), y[perm]
    if corruption.kind == "random_labels":
        return x.clone(), torch.randint(num_classes, y.shape, generator=gen).to(y.device)
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    return x + corruption.noise_std * noise, y.clone()


def _with_corrupted_copies(problem: Problem, selections: list[tuple], corruption: Corruption, seed: int) -> Problem:
    """A new Problem where each selection of schedule entries (an index tuple) uses a corrupted copy of its samples."""
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(problem.y_train.max()) + 1  # every class appears among the training labels
    schedule = problem.schedule.clone()
    xs, ys = [problem.x_train], [problem.y_train]
    size = problem.y_train.shape[0]
    for sel in selections:
        unique, inverse = torch.unique(problem.schedule[sel], return_inverse=True)
        x, y = corrupt_samples(problem.x_train[unique], problem.y_train[unique], corruption, num_classes, gen)
        schedule[sel] = size + inverse
        xs.append(x)
        ys.append(y)
        size += unique.shape[0]
    return dataclasses.replace(problem, x_train=torch.cat(xs), y_train=torch.cat(ys), schedule=schedule)


def corrupt_batches(problem: Problem, targets: Iterable[tuple[int, int]], corruption: Corruption, seed: int = 0) -> Problem:
    """Corrupt node ``node``'s batch at round ``round`` for every ``(round, node)`` in ``targets``, and nothing else."""
    targets = sorted(set(targets))
    bad = [(t, k) for t, k in targets if not (0 <= t < problem.rounds and 0 <= k < problem.nodes)]
    if bad:
        raise ValueError(f"targets {bad} out of range: rounds 0..{problem.rounds - 1}, nodes 0..{problem.nodes - 1}")
    return _with_corrupted_copies(problem, targets, corruption, seed)


def corrupt_nodes(problem: Problem, nodes: Iterable[int], corruption: Corruption, seed: int = 0) -> Problem:
    """Corrupt all local data of ``nodes`` once (the same corrupted copy in every round): nodes holding harmful data."""
    nodes = sorted(set(nodes))
    bad = [k for k in nodes if not 0 <= k < problem.nodes]
    if bad:
        raise ValueError(f"nodes {bad} out of range 0..{problem.nodes - 1}")
    return _with_corrupted_copies(problem, [(slice(None), k) for k in nodes], corruption, seed)


def pick_nodes(nodes: int, fraction: float, seed: int) -> list[int]:
    """A seeded choice of ``round(fraction · nodes)`` nodes: the ones that hold harmful data."""
    if not 0 <= fraction < 1:
        raise ValueError(f"the fraction of harmful nodes must lie in [0, 1), got {fraction}")
    count = round(fraction * nodes)
    return sorted(int(k) for k in np.random.default_rng(seed).choice(nodes, count, replace=False))
