"""Shared fixtures: synthetic influence fields in the exact format of the groundtruth/estimate jobs."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dice_repro.influence.units import field_frame, make_units
from dice_repro.outputs import write_table
from dice_repro.settings import RunSettings
from dice_repro.topology import make_topology
from dice_repro.workflow_config import load_pipeline

REPO = Path(__file__).resolve().parents[1]

#: A config exercising every figure: E1-like, E2-like (sweep), E4/E5-like (horizon 3, end of training), ablations.
SYNTHETIC_CONFIG = {
    "defaults": {"dataset": "digits", "nodes": 8, "samples_per_node": 64, "batch_size": 16, "epochs": 2,
                 "unit_rounds": [1, 4], "estimators": ["one_hop"]},
    "experiments": {
        "alignment": {"grid": {"model": ["mlp", "cnn"], "topology": ["ring", "exponential"]}, "seeds": [1, 2],
                      "figures": ["alignment"]},
        "sensitivity": {"grid": [{"batch_size": [8, 32], "lr": [0.02, 0.2], "init": ["per_node", "common"],
                                  "unit_rounds": ["first_epoch", "last_epoch"]}, {"nodes": [4, 8, 16], "samples_per_node": [48]}],
                        "settings": {"max_units": 16, "estimators": ["one_hop", "propagation"]},
                        "figures": ["validity_map"]},
        "cascade": {"settings": {"nodes": 16, "horizon": 3, "end_of_training": True, "unit_rounds": [2],
                                 "estimators": ["one_hop", "propagation", "printed_sign"]},
                    "grid": {"topology": ["hub16", "ring"]}, "seeds": [1, 2],
                    "figures": ["cascade_graph", "cascade_hops", "rhop"]},
    },
}


def synthetic_field(run_id: str, s: RunSettings) -> dict[str, object]:
    """Ground truth decaying with hop distance, estimates = ground truth × (1 + noise); printed_sign flipped."""
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    units = make_units(s)
    hops = make_topology(s.topology, s.nodes, seed=s.seed).hop_distances()
    src = np.array([u.source for u in units])
    base = rng.normal(size=len(units)) * 1e-3
    dist = hops[src]  # [U, n]
    taus = np.arange(1, s.horizon + 1)
    reached = dist[:, None, :] <= taus[None, :, None]
    gt_window = np.where(reached, base[:, None, None] * 0.4 ** np.maximum(dist, 0)[:, None, :], 0.0)
    gt_window *= 1 + 0.1 * rng.normal(size=gt_window.shape)
    gt_final = base[:, None] * 0.2 * (1 + 0.2 * rng.normal(size=(len(units), s.nodes)))
    final_tau = np.full(len(units), 3.0)
    noisy = lambda a: a * (1 + 0.05 * rng.normal(size=np.shape(a)))  # noqa: E731
    fields = {"groundtruth": field_frame(units, hops, "groundtruth", base, gt_window,
                                         gt_final if s.end_of_training else None, final_tau)}
    estimates = []
    for name in s.estimators:
        reach = 1 if name in ("one_hop", "printed_sign") else s.horizon
        sign = -s.lr if name == "printed_sign" else 1.0
        final = noisy(gt_final) if s.end_of_training and reach > 1 else None
        estimates.append(field_frame(units, hops, name, sign * noisy(base), sign * noisy(gt_window[:, :reach]),
                                     final, final_tau))
    fields["estimates"] = pd.concat(estimates, ignore_index=True)
    return fields


def write_synthetic_runs(root: Path, config: dict) -> list[Path]:
    """Write groundtruth.csv and estimates.csv (with sidecars) for every run of ``config``; return their paths."""
    paths = []
    for run_id, s in load_pipeline(config).runs.items():
        for job, frame in synthetic_field(run_id, s).items():
            frame.insert(0, "run", run_id)
            path = root / "runs" / run_id / f"{job}.csv"
            write_table(frame, path, {"run": run_id, "settings": s.to_dict(), "job": job})
            paths.append(path)
    return paths


@pytest.fixture(scope="session")
def synthetic_tables(tmp_path_factory) -> Path:
    """The comparison tables of ``SYNTHETIC_CONFIG`` plus an ablation table, written by ``run_compare``."""
    from dice_repro.compare import run_compare

    root = tmp_path_factory.mktemp("synthetic")
    table = root / "ablations.tsv"
    table.write_text("name\tlr\testimators\nbaseline\t0.1\tone_hop+propagation\nsmall_lr\t0.01\tone_hop+propagation\n")
    config = {**SYNTHETIC_CONFIG, "ablations": {"table": str(table), "settings": {"horizon": 2}}}
    inputs = write_synthetic_runs(root, config)
    run_compare(inputs, root / "tables", wandb_mode="disabled", bootstrap=200)
    return root / "tables"
