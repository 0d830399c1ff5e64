"""Influence benchmark: batched replays, propagation vs path sum, and the whole cost per one-hop unit.

Every speed is a ratio against a baseline measured in the same run (this machine is noisy):
(i)   ground-truth units/s, batched replays vs one replay at a time, 1–256 units;
(ii)  propagation vs path-sum time for r = 1–4 on exponential n = 16, values checked equal;
(iii) ms per one-hop unit (training amortised + ground truth + one_hop) on mnist5k, MLP, 16 nodes.

    python benchmarks/influence.py [--quick]
writes benchmarks/results/influence.csv and benchmarks/results/influence.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from dice_repro import data  # noqa: E402
from dice_repro.influence.estimators import estimate_field, estimate_round  # noqa: E402
from dice_repro.influence.groundtruth import groundtruth_field, replay  # noqa: E402
from dice_repro.influence.units import Unit  # noqa: E402
from dice_repro.settings import RunSettings  # noqa: E402
from dice_repro.trajectory import build_run, train_run  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def timed(fn, reps: int = 3) -> float:
    """Median wall time of ``fn()`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def batched_vs_single(ds, sizes: list[int], reps: int) -> list[dict]:
    """(i) ground-truth units per second: one batched replay of m units vs m single replays (horizon 2)."""
    s = RunSettings(model="mlp", topology="exponential", nodes=16, samples_per_node=240, batch_size=32, epochs=1,
                    unit_rounds=[3], horizon=2)
    run = build_run(s, ds)
    theta = train_run(run, progress=False).states[3]
    pool = [Unit(j, 3, (i,)) for i in range(32) for j in range(16)]  # one-sample units, all at round 3
    rows = []
    for m in sizes:
        units = pool[:m]
        batched = timed(lambda: replay(run.problem, theta, units, 2), reps)
        single_units = units[: min(m, 16)]  # one-at-a-time cost is linear: time a prefix and scale
        single = timed(lambda: [replay(run.problem, theta, [u], 2) for u in single_units], reps) * m / len(single_units)
        rows.append({"bench": "groundtruth_batching", "units": m, "impl": "batched", "seconds": batched,
                     "units_per_s": m / batched, "speedup": single / batched})
        rows.append({"bench": "groundtruth_batching", "units": m, "impl": "one_at_a_time", "seconds": single,
                     "units_per_s": m / single, "speedup": 1.0})
        print(f"(i) {m:4d} units: batched {m / batched:8.1f} units/s, one at a time {m / single:8.1f} units/s, "
              f"speedup {single / batched:.1f}x")
    return rows


def propagation_vs_path_sum(ds, max_r: int, reps: int) -> list[dict]:
    """(ii) one batched propagation vs the exponential path enumeration, same units, values compared."""
    rows = []
    for r in range(1, max_r + 1):
        s = RunSettings(model="mlp", topology="exponential", nodes=16, samples_per_node=240, batch_size=32, epochs=1,
                        unit_rounds=[2], horizon=r, dtype="float64")
        run = build_run(s, ds)
        theta = train_run(run, progress=False).states[2]
        units = [Unit(j, 2) for j in range(16)]  # every node's batch of one round, as an estimate job batches them
        out = {}
        t_prop = timed(lambda: out.update(estimate_round(run.problem, theta, units, ["propagation"], r)), reps)
        t_path = timed(lambda: out.update(estimate_round(run.problem, theta, units, ["path_sum"], r)), 1)
        err = float(np.abs(out["propagation"][1] - out["path_sum"][1]).max())
        scale = float(np.abs(out["path_sum"][1]).max())
        assert err <= 1e-9 * max(scale, 1e-12) + 1e-15, f"propagation != path_sum at r={r}: {err}"
        rows.append({"bench": "propagation_vs_path_sum", "r": r, "impl": "propagation", "seconds": t_prop,
                     "speedup": t_path / t_prop, "max_abs_diff": err})
        rows.append({"bench": "propagation_vs_path_sum", "r": r, "impl": "path_sum", "seconds": t_path,
                     "speedup": 1.0, "max_abs_diff": err})
        print(f"(ii) r={r}: propagation {t_prop:.3f}s, path sum {t_path:.3f}s, speedup {t_path / t_prop:.1f}x, "
              f"max |diff| {err:.1e}")
    return rows


def cost_per_unit(ds) -> list[dict]:
    """(iii) all one-hop units of a 2-epoch run: training + ground truth + one_hop, per unit."""
    s = RunSettings(model="mlp", topology="exponential", nodes=16, samples_per_node=250, batch_size=32, epochs=2,
                    horizon=1, estimators=("one_hop",))
    start = time.perf_counter()
    run = build_run(s, ds)
    saved = {"states": train_run(run, progress=False).states}
    t_train = time.perf_counter() - start
    t_gt = timed(lambda: groundtruth_field(run, saved, progress=False), 1)
    t_est = timed(lambda: estimate_field(run, saved, progress=False), 1)
    units = s.nodes * len(s.unit_round_list())
    per_unit = 1000 * (t_train + t_gt + t_est) / units
    print(f"(iii) {units} units: train {t_train:.2f}s, ground truth {t_gt:.2f}s, one_hop {t_est:.2f}s "
          f"-> {per_unit:.1f} ms per unit")
    return [{"bench": "cost_per_unit", "units": units, "impl": "train+groundtruth+one_hop",
             "seconds": t_train + t_gt + t_est, "ms_per_unit": per_unit}]


def plot(frame: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    gt = frame[frame.bench == "groundtruth_batching"]
    for impl, part in gt.groupby("impl"):
        axes[0].plot(part.units, part.units_per_s, marker="o", label=impl)
    axes[0].set(xscale="log", yscale="log", xlabel="units per call", ylabel="ground-truth units / s",
                title="(i) batched replays vs one at a time")
    axes[0].legend()
    pp = frame[frame.bench == "propagation_vs_path_sum"]
    for impl, part in pp.groupby("impl"):
        axes[1].plot(part.r, part.seconds, marker="o", label=impl)
    axes[1].set(yscale="log", xlabel="hops r", ylabel="seconds (16 units)", title="(ii) propagation vs path sum")
    axes[1].set_xticks(sorted(pp.r.unique()))
    axes[1].legend()
    cost = frame[frame.bench == "cost_per_unit"]
    if len(cost):
        fig.suptitle(f"(iii) whole cost per one-hop unit: {cost.ms_per_unit.iloc[0]:.1f} ms "
                     f"(mnist5k, MLP, 16 nodes, exponential, batch 32, 2 epochs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repetitions")
    args = parser.parse_args()
    torch.manual_seed(0)
    ds = data.load_dataset("mnist5k")
    sizes = [1, 4, 16, 64] if args.quick else [1, 4, 16, 64, 256]
    rows = batched_vs_single(ds, sizes, 1 if args.quick else 3)
    rows += propagation_vs_path_sum(ds, 3 if args.quick else 4, 1 if args.quick else 3)
    rows += cost_per_unit(ds)
    OUT.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(OUT / "influence.csv", index=False)
    plot(frame, OUT / "influence.png")
    print(f"wrote {OUT / 'influence.csv'} and {OUT / 'influence.png'}")


if __name__ == "__main__":
    main()
