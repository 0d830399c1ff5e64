"""Training units (SPEC §2): node j's batch at round t, or samples of it, and the fields over them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dice_repro.engine import Problem
from dice_repro.settings import RunSettings


@dataclass(frozen=True)
class Unit:
    """What is removed: ``samples`` of node ``source``'s batch at ``round`` (None = the whole batch)."""

    source: int
    round: int
    samples: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        return "batch" if self.samples is None else ";".join(map(str, self.samples))


def make_units(settings: RunSettings) -> list[Unit]:
    """Every unit the settings ask for, capped to ``max_units`` by a seeded draw (kept in order)."""
    units = []
    for t in settings.unit_round_list():
        for j in settings.unit_node_list():
            if settings.unit_kind == "batch":
                units.append(Unit(j, t))
                continue
            k = settings.samples_per_unit
            for start in range(0, settings.batch_size - k + 1, k):
                units.append(Unit(j, t, tuple(range(start, start + k))))
    if len(units) > settings.max_units:
        keep = np.random.default_rng(settings.seed).choice(len(units), settings.max_units, replace=False)
        units = [units[i] for i in sorted(keep)]
    return units


def by_round(units: list[Unit], chunk: int) -> list[tuple[int, list[int]]]:
    """Group unit indices by round and split each group into chunks of at most ``chunk``."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, u in enumerate(units):
        groups[u.round].append(i)
    return [(t, idx[s:s + chunk]) for t, idx in sorted(groups.items()) for s in range(0, len(idx), chunk)]


def removal_weights(problem: Problem, units: list[Unit]) -> torch.Tensor:
    """``[U, B]`` indicator of the removed samples of each unit's source batch."""
    w = torch.zeros(len(units), problem.batch_size, dtype=problem.x_train.dtype, device=problem.x_train.device)
    for i, u in enumerate(units):
        if u.samples is None:
            w[i] = 1
        else:
            w[i, list(u.samples)] = 1
    return w


def removed_update(problem: Problem, theta_t: torch.Tensor, units: list[Unit]) -> torch.Tensor:
    """``Δ = −η (1/B) Σ_{i∈S} ∇ℓ(θ_j^t; z_i)`` for every unit: the update the unit contributed, ``[U, P]``."""
    t = units[0].round
    sources = torch.tensor([u.source for u in units], device=theta_t.device)
    g = problem.node_grads(theta_t[sources], sources, t, removal_weights(problem, units))
    return -problem.lr * g


def chunk_size(problem: Problem, budget_bytes: float = 768e6, copies: int = 8) -> int:
    """How many units fit in memory at once (``copies`` state-sized tensors per unit)."""
    per_unit = problem.nodes * problem.fmodel.size * problem.x_train.element_size() * copies
    return max(1, int(budget_bytes // per_unit))


def field_frame(
    units: list[Unit],
    hops: np.ndarray,
    estimator: str,
    half: np.ndarray,
    window: np.ndarray,
    final: np.ndarray | None = None,
    final_tau: np.ndarray | None = None,
) -> pd.DataFrame:
    """Tidy rows (unit, τ, node) of a field: ``half[U]`` at the source at τ = ½, ``window[U, h, n]`` at τ = 1..h,
    and optionally ``final[U, n]`` at the end of training (τ = T − t)."""
    n_units, h, n = window.shape
    src = np.array([u.source for u in units])
    rnd = np.array([u.round for u in units])
    lab = np.array([u.label for u in units], dtype=object)
    parts = [pd.DataFrame({"unit": np.arange(n_units), "source": src, "round": rnd, "removed": lab, "tau": 0.5,
                           "node": src, "hop": 0, "final": 0, "value": half})]
    uu, tt, kk = np.meshgrid(np.arange(n_units), np.arange(1, h + 1), np.arange(n), indexing="ij")
    uu, tt, kk = uu.ravel(), tt.ravel(), kk.ravel()
    parts.append(pd.DataFrame({"unit": uu, "source": src[uu], "round": rnd[uu], "removed": lab[uu],
                               "tau": tt.astype(float), "node": kk, "hop": hops[src[uu], kk], "final": 0,
                               "value": window.reshape(-1)}))
    if final is not None:
        uu, kk = (a.ravel() for a in np.meshgrid(np.arange(n_units), np.arange(n), indexing="ij"))
        parts.append(pd.DataFrame({"unit": uu, "source": src[uu], "round": rnd[uu], "removed": lab[uu],
                                   "tau": final_tau[uu].astype(float), "node": kk, "hop": hops[src[uu], kk],
                                   "final": 1, "value": final.reshape(-1)}))
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(frame.columns.get_loc("value"), "estimator", estimator)
    return frame.sort_values(["unit", "final", "tau", "node"], kind="stable", ignore_index=True)
