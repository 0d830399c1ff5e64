"""Settings → (data, model, topology, schedule) → the factual trajectory, saved for replays.

A trajectory file holds what later jobs need to rebuild the exact run: the settings, the batch
schedule, the mixing matrices, the initial parameters and every node's state at the unit rounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dice_repro import data
from dice_repro.influence.units import make_units
from dice_repro.outputs import atomic_save
from dice_repro.engine import FlatModel, Problem, TrainResult, auto_device, init_params, train
from dice_repro.settings import RunSettings
from dice_repro.topology import Topology, make_topology


def dtype_of(settings: RunSettings) -> torch.dtype:
    return torch.float64 if settings.dtype == "float64" else torch.float32


def get_dataset(settings: RunSettings, cache: str | Path | None = None) -> data.Dataset:
    """The run's data set, from the prepared cache file when given."""
    if cache is not None:
        return data.load_saved_dataset(cache)
    return data.load_dataset(settings.dataset, settings.data_dir, settings.download, settings.image_size)


def get_topology(settings: RunSettings) -> Topology:
    return make_topology(settings.topology, settings.nodes, seed=settings.seed, path=settings.topology_file)


@dataclass
class Run:
    """A run ready to train or replay: the engine problem plus what made it."""

    settings: RunSettings
    problem: Problem
    theta0: torch.Tensor
    topology: Topology
    dataset: data.Dataset

    @property
    def fmodel(self) -> FlatModel:
        return self.problem.fmodel


def build_run(settings: RunSettings, dataset: data.Dataset) -> Run:
    """Deterministically build the problem of a run: partition, schedule, probe, W(t), θ^0."""
    device = auto_device(settings.device)
    dtype = dtype_of(settings)
    topology = get_topology(settings)
    if topology.n != settings.nodes:
        raise ValueError(f"the topology file has {topology.n} nodes but nodes={settings.nodes}; make them agree")
    pools = data.partition(dataset.y_train, settings.nodes, settings.samples_per_node, settings.partition,
                           settings.dirichlet_alpha, settings.seed)
    schedule = data.batch_schedule(pools, settings.batch_size, settings.epochs, settings.partition, settings.seed)
    probe_idx = data.select_probe(dataset, settings.probe, settings.probe_size, settings.seed)
    fmodel, theta0 = init_params(settings.model, dataset.input_shape, dataset.num_classes, settings.nodes,
                                 settings.init, settings.seed)
    fmodel.module.to(device=device, dtype=dtype)
    mixing = torch.tensor(np.stack(topology.matrices), dtype=dtype)
    problem = Problem(
        fmodel=fmodel,
        x_train=dataset.x_train.to(device=device, dtype=dtype),
        y_train=dataset.y_train.to(device),
        schedule=schedule,
        mixing=mixing,
        lr=settings.lr,
        x_probe=dataset.x_test[probe_idx].to(device=device, dtype=dtype),
        y_probe=dataset.y_test[probe_idx].to(device),
    )
    return Run(settings, problem, theta0.to(device=device, dtype=dtype), topology, dataset)


def train_run(run: Run, progress: bool | None = None, on_round=None) -> TrainResult:
    """Train the factual trajectory, recording θ^t at the rounds of the units drawn for attribution."""
    rounds = sorted({u.round for u in make_units(run.settings)})
    return train(run.problem, run.theta0, record=rounds, progress=progress, on_round=on_round)


def test_accuracy(run: Run, theta: torch.Tensor, limit: int = 1000) -> torch.Tensor:
    """Test accuracy of every node's model on the first ``limit`` test images."""
    p = run.problem
    x = run.dataset.x_test[:limit].to(device=p.x_train.device, dtype=p.x_train.dtype)
    y = run.dataset.y_test[:limit].to(p.x_train.device)
    with torch.no_grad():
        return p.accuracy(theta, x, y)


def save_trajectory(run: Run, result: TrainResult, path: str | Path) -> torch.Tensor:
    """Write the trajectory file atomically (loadable with ``weights_only=True``); returns the test accuracy."""
    accuracy = test_accuracy(run, result.final).cpu()
    atomic_save(
        {
            "settings": run.settings.to_dict(),
            "schedule": run.problem.schedule.cpu(),
            "mixing": run.problem.mixing.cpu(),
            "states": {int(t): s.cpu() for t, s in result.states.items()},
            "final": result.final.cpu(),
            "train_loss": result.train_loss.cpu(),
            "probe_loss": result.probe_loss.cpu(),
            "test_accuracy": accuracy,
        },
        path,
    )
    return accuracy


def load_trajectory(path: str | Path) -> dict[str, Any]:
    """Read a trajectory file with torch's weights-only loader."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_run(path: str | Path, dataset_cache: str | Path | None = None) -> tuple[Run, dict[str, Any]]:
    """Rebuild the exact run behind a trajectory file, and check it matches what was saved."""
    saved = load_trajectory(path)
    settings = RunSettings.from_dict(saved["settings"])
    run = build_run(settings, get_dataset(settings, dataset_cache))
    if not torch.equal(run.problem.schedule.cpu(), saved["schedule"]):
        raise RuntimeError(
            f"{path}: the rebuilt batch schedule differs from the saved one (data or code changed since "
            "training); delete the file and rerun the train step"
        )
    return run, saved
