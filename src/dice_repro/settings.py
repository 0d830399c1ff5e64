"""The settings of one run (one trajectory and the influence work on it), validated with clear errors."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A bad run setting; the message names the key, the value and what is allowed."""


CHOICES: dict[str, tuple] = {
    "dataset": ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet"),
    "model": ("logreg", "mlp", "cnn", "resnet18_micro"),
    "topology": ("ring", "exponential", "grid", "torus", "one_peer_exponential", "complete", "star", "hub16", "erdos_renyi", "file"),
    "partition": ("iid", "dirichlet", "resample"),
    "init": ("per_node", "common"),
    "probe": ("first", "stratified"),
    "dtype": ("float32", "float64"),
    "unit_kind": ("batch", "sample"),
}
ESTIMATORS = ("one_hop", "proximal", "propagation", "path_sum", "path_sum_printed", "no_curvature", "printed_sign", "second_order", "own_term", "cosine")


@dataclass(frozen=True)
class RunSettings:
    """One decentralized run and what is attributed on it (SPEC §1–§3)."""

    experiment: str = "default"
    dataset: str = "mnist5k"
    data_dir: str | None = None
    download: bool = False
    image_size: int | None = None
    model: str = "mlp"
    topology: str = "ring"
    topology_file: str | None = None
    nodes: int = 16
    samples_per_node: int = 240
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    batch_size: int = 32
    lr: float = 0.1
    epochs: int = 2
    init: str = "per_node"
    probe: str = "first"
    probe_size: int = 5
    seed: int = 222
    dtype: str = "float32"
    device: str = "auto"
    # which units are attributed: round selection is "all", "first_epoch", "last_epoch" or a list of rounds
    unit_rounds: Any = "all"
    unit_nodes: Any = "all"
    unit_kind: str = "batch"
    samples_per_unit: int = 1
    max_units: int = 512
    horizon: int = 1
    end_of_training: bool = False
    estimators: tuple[str, ...] = ("one_hop", "propagation", "second_order")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "RunSettings":
        """Validate a mapping of settings; unknown keys and bad values raise ``SettingsError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}; allowed keys: {', '.join(sorted(names))}"
            )
        values = dict(raw)
        if "estimators" in values:
            values["estimators"] = tuple(values["estimators"])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ``SettingsError`` for the first invalid value."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise SettingsError(f"setting {key}={value!r} is not allowed; choose one of {', '.join(allowed)}")
        for key in ("nodes", "samples_per_node", "batch_size", "epochs", "probe_size", "max_units", "horizon", "samples_per_unit"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"setting {key}={value!r} must be a positive integer")
        if not self.lr > 0:
            raise SettingsError(f"setting lr={self.lr!r} must be positive")
        if self.batch_size > self.samples_per_node:
            raise SettingsError(
                f"batch_size={self.batch_size} exceeds samples_per_node={self.samples_per_node}; lower batch_size"
            )
        if self.topology == "file" and not self.topology_file:
            raise SettingsError("topology='file' needs topology_file: the path of a .npy or .csv mixing matrix")
        bad = [e for e in self.estimators if e not in ESTIMATORS]
        if bad:
            raise SettingsError(f"unknown estimator(s) {bad}; choose from {', '.join(ESTIMATORS)}")
        if self.horizon >= self.rounds:
            raise SettingsError(
                f"horizon={self.horizon} must be below the number of rounds ({self.rounds}); "
                "lower horizon or train for more epochs"
            )
        if self.unit_kind == "sample" and self.samples_per_unit > self.batch_size:
            raise SettingsError(f"samples_per_unit={self.samples_per_unit} exceeds batch_size={self.batch_size}")

    @property
    def rounds_per_epoch(self) -> int:
        return self.samples_per_node // self.batch_size

    @property
    def rounds(self) -> int:
        return self.epochs * self.rounds_per_epoch

    def unit_round_list(self) -> list[int]:
        """The rounds whose batches are attributed; every one leaves ``horizon`` rounds to observe."""
        last = self.rounds - self.horizon
        if self.unit_rounds == "all":
            rounds = range(0, last + 1)
        elif self.unit_rounds == "first_epoch":
            rounds = range(0, min(self.rounds_per_epoch, last + 1))
        elif self.unit_rounds == "last_epoch":
            rounds = range(max(0, self.rounds - self.rounds_per_epoch), last + 1)
        elif isinstance(self.unit_rounds, (list, tuple)):
            rounds = [r if r >= 0 else self.rounds + r for r in self.unit_rounds]
            bad = [r for r in rounds if not 0 <= r <= last]
            if bad:
                raise SettingsError(
                    f"unit_rounds {bad} out of range: rounds must lie in 0..{last} "
                    f"(training has {self.rounds} rounds and horizon={self.horizon} needs rounds after the unit)"
                )
        else:
            raise SettingsError(
                f"unit_rounds={self.unit_rounds!r}: use 'all', 'first_epoch', 'last_epoch' or a list of rounds"
            )
        return sorted(set(rounds))

    def unit_node_list(self) -> list[int]:
        """The nodes whose batches are attributed."""
        if self.unit_nodes == "all":
            return list(range(self.nodes))
        bad = [k for k in self.unit_nodes if not 0 <= k < self.nodes]
        if bad:
            raise SettingsError(f"unit_nodes {bad} out of range 0..{self.nodes - 1}")
        return sorted(set(self.unit_nodes))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (what every output carries)."""
        d = dataclasses.asdict(self)
        d["estimators"] = list(self.estimators)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
