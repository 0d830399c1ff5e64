"""Benchmark: the all-nodes-at-once engine against the plain per-node reference.

For every (model, nodes, batch) it measures, in the same process and interleaved,

* ``engine``        a bare ``Problem.step`` loop (local SGD step of every node + ``W @ θ`` gossip),
                    the same work per round as the reference;
* ``engine_train``  ``dice_repro.engine.train`` (what a factual run uses: the step loop plus the
                    per-round probe loss and finiteness check);
* ``reference``     ``dice_repro.reference.reference_train`` (one ``nn.Module`` per node, Python-loop gossip);

and a ``torch.bmm`` of the same number of FLOPs as one engine training round, which is the
"what could this machine do" baseline for ``fraction_of_matmul``.

Writes ``benchmarks/results/engine.csv``, ``engine.png`` and ``engine_profile.txt``.

    python benchmarks/engine.py            # full run (n = 4, 16, 32, 64), a few minutes
    python benchmarks/engine.py --quick    # n = 4, 16, fewer repetitions
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from dice_repro import data
from dice_repro.engine import Problem, init_params, train
from dice_repro.reference import reference_train
from dice_repro.topology import make_topology

HERE = Path(__file__).resolve().parent
TOPOLOGY = "exponential"
LR = 0.05
IMPLS = ("engine", "engine_train", "reference")


# ----------------------------------------------------------------------------- setup


def make_problem(ds: data.Dataset, model: str, nodes: int, batch: int, rounds: int) -> tuple[Problem, torch.Tensor]:
    """A ``Problem`` as the tests build it (exponential topology, per-node init), with ≥ ``rounds`` rounds.

    Each node draws its pool from the 4,000 mnist5k training images (disjoint when ``nodes × batch``
    fits, overlapping otherwise, e.g. 64 nodes × 64): which images does not matter for the speed.
    """
    n_train = ds.y_train.shape[0]
    per_node = max(batch, n_train // nodes)
    if nodes * per_node <= n_train:
        pools = data.partition(ds.y_train, nodes, per_node, "iid", seed=1)
    else:
        gen = torch.Generator().manual_seed(1)
        pools = torch.stack([torch.randperm(n_train, generator=gen)[:per_node] for _ in range(nodes)])
    epochs = math.ceil(rounds / data.rounds_per_epoch(per_node, batch))
    schedule = data.batch_schedule(pools, batch, epochs, "iid", seed=1)[:rounds]
    top = make_topology(TOPOLOGY, nodes)
    mixing = torch.tensor(np.stack(top.matrices), dtype=torch.float32)
    fmodel, theta0 = init_params(model, ds.input_shape, ds.num_classes, nodes, "per_node", seed=3)
    problem = Problem(fmodel, ds.x_train, ds.y_train, schedule, mixing, LR, ds.x_test[:5], ds.y_test[:5])
    return problem, theta0


def reference_models(problem: Problem, theta0: torch.Tensor) -> list[nn.Module]:
    """One module per node holding that node's row of ``theta0`` (as tests/test_engine.py does)."""
    models = []
    for row in theta0:
        m = copy.deepcopy(problem.fmodel.module)
        torch.nn.utils.vector_to_parameters(row.clone(), m.parameters())
        models.append(m)
    return models


# ----------------------------------------------------------------------------- FLOPs


def forward_flops(module: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs of ``module`` on the batch ``x``: 2·in·out·B per Linear, 2·Cin·Cout·k²·Hout·Wout·B per Conv2d.

    (Bias adds, activations and pooling are ignored: they are a few % of these.)
    """
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Linear):
            rows = out.numel() // mod.out_features
            total += 2 * mod.in_features * mod.out_features * rows
        elif isinstance(mod, nn.Conv2d):
            b, c_out, h, w = out.shape
            k = mod.kernel_size[0] * mod.kernel_size[1]
            total += 2 * (mod.in_channels // mod.groups) * c_out * k * h * w * b

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    return total


def train_flops_per_round(problem: Problem) -> int:
    """Training FLOPs of one round: (forward + backward ≈ 3 × forward) × nodes."""
    x = problem.x_train[problem.schedule[0, 0]]
    return 3 * forward_flops(problem.fmodel.module, x) * problem.nodes


def gossip_flops_per_round(problem: Problem, params: int) -> int:
    """FLOPs of the engine's dense ``W @ θ`` (2·n²·P); not counted in achieved_gflops."""
    return 2 * problem.nodes**2 * params


class Matmul:
    """A ``torch.bmm`` [n, s, s] @ [n, s, s] with about ``flops`` FLOPs (into a preallocated output)."""

    def __init__(self, flops: int, batches: int):
        self.batches = batches
        self.side = max(8, round((flops / (2 * batches)) ** (1 / 3)))
        self.flops = 2 * batches * self.side**3
        gen = torch.Generator().manual_seed(0)
        shape = (batches, self.side, self.side)
        self.a = torch.randn(shape, generator=gen)
        self.b = torch.randn(shape, generator=gen)
        self.out = torch.empty(shape)

    def __call__(self) -> float:
        t0 = time.perf_counter()
        torch.bmm(self.a, self.b, out=self.out)
        return time.perf_counter() - t0


# ----------------------------------------------------------------------------- timing


class Runner:
    """One implementation on one configuration; ``run(rounds)`` returns seconds for that many rounds."""

    def __init__(self, impl: str, problem: Problem, theta0: torch.Tensor):
        self.impl = impl
        self.problem = problem
        self.theta = theta0.clone()
        self.models = reference_models(problem, theta0) if impl == "reference" else None

    def run(self, rounds: int) -> float:
        p = self.problem
        t0 = time.perf_counter()
        if self.impl == "engine":
            with torch.no_grad():
                theta = self.theta
                for t in range(rounds):
                    _, theta, _ = p.step(theta, t)
                self.theta = theta
        elif self.impl == "engine_train":
            self.theta = train(p, self.theta, stop=rounds, progress=False).final
        else:
            reference_train(self.models, p.x_train, p.y_train, p.schedule, p.mixing, p.lr, rounds)
        return time.perf_counter() - t0


def measure_config(
    ds: data.Dataset, model: str, nodes: int, batch: int, cfg: argparse.Namespace
) -> tuple[list[dict], dict]:
    """Interleaved repetitions of every implementation (and the matmul baseline) on one configuration."""
    problem, theta0 = make_problem(ds, model, nodes, batch, cfg.max_rounds)
    runners = {impl: Runner(impl, problem, theta0) for impl in IMPLS}
    flops = train_flops_per_round(problem)
    matmul = Matmul(flops, nodes)

    # warm up (first vmap call, allocator, caches) and size the repetitions from a warm round
    rounds, rep_s = {}, 0.0
    for impl, r in runners.items():
        est = r.run(1)
        if est < 1.0:  # the first round carries one-off costs (vmap, allocator): time a second one
            est = r.run(1)
        rounds[impl] = int(min(cfg.max_rounds, max(cfg.min_rounds, math.ceil(cfg.target_s / max(est, 1e-6)))))
        rep_s += rounds[impl] * est
    matmul()
    reps = cfg.reps if rep_s <= cfg.slow_rep_s else cfg.min_reps  # slow CNN configurations: fewer repetitions

    times: dict[str, list[float]] = {impl: [] for impl in IMPLS}
    mm_times: list[float] = []
    order = list(IMPLS)
    for rep in range(reps):
        for impl in order[rep % len(order):] + order[: rep % len(order)]:  # rotate who goes first
            times[impl].append(runners[impl].run(rounds[impl]) / rounds[impl])
        mm_times.append(matmul())
    if not bool(torch.isfinite(runners["engine"].theta).all()):
        raise RuntimeError(f"{model} n={nodes} B={batch}: the engine diverged during the benchmark")

    mm_s = statistics.median(mm_times)
    mm_gflops = matmul.flops / mm_s / 1e9
    params = problem.fmodel.size
    rows = []
    ref_rps = 1.0 / statistics.median(times["reference"])
    for impl in IMPLS:
        s = statistics.median(times[impl])
        gflops = flops / s / 1e9
        rows.append({
            "model": model,
            "nodes": nodes,
            "batch": batch,
            "impl": impl,
            "rounds_per_s": 1.0 / s,
            "ms_per_round": 1e3 * s,
            "ms_per_round_min": 1e3 * min(times[impl]),
            "ms_per_round_max": 1e3 * max(times[impl]),
            "rounds_per_rep": rounds[impl],
            "reps": reps,
            "speedup": (1.0 / s) / ref_rps,
            "params": params,
            "train_gflop_per_round": flops / 1e9,
            "gossip_gflop_per_round": gossip_flops_per_round(problem, params) / 1e9,
            "achieved_gflops": gflops,
            "matmul_gflops": mm_gflops,
            "fraction_of_matmul": gflops / mm_gflops,
            "matmul_shape": f"{nodes}x{matmul.side}x{matmul.side}",
            "threads": torch.get_num_threads(),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
            "torch": torch.__version__,
        })
    return rows, {"problem": problem, "theta0": theta0}


# ----------------------------------------------------------------------------- profile


def profile_round(ds: data.Dataset, model: str, nodes: int, batch: int, top: int = 15) -> str:
    """torch.profiler (CPU) table of one engine round, by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    problem, theta0 = make_problem(ds, model, nodes, batch, 4)
    with torch.no_grad():
        for t in range(3):
            problem.step(theta0, t)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            t0 = time.perf_counter()
            problem.step(theta0, 3)
            wall = time.perf_counter() - t0
    table = prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40, max_shapes_column_width=70
    )
    head = f"== one engine round (Problem.step): {model} n={nodes} batch={batch}, {wall * 1e3:.1f} ms under the profiler =="
    return f"{head}\n{table}"


# ----------------------------------------------------------------------------- plot + summary


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    styles = {"engine": "-", "engine_train": ":", "reference": "--"}
    markers = {"engine": "o", "engine_train": ".", "reference": "s"}
    combos = list(df.groupby(["model", "batch"]).groups)
    colors = dict(zip(combos, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (model, batch, impl), g in df.groupby(["model", "batch", "impl"]):
        g = g.sort_values("nodes")
        ax.plot(g["nodes"], g["rounds_per_s"], styles[impl], marker=markers[impl], color=colors[(model, batch)],
                label=f"{impl} {model} B={batch}")
        if impl != "reference":
            ax2.plot(g["nodes"], g["speedup"], styles[impl], marker=markers[impl], color=colors[(model, batch)],
                     label=f"{impl} {model} B={batch}")
    nodes = sorted(df["nodes"].unique())
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xticks(nodes, [str(n) for n in nodes])
        a.set_xlabel("nodes n (exponential topology)")
        a.grid(True, which="both", alpha=0.3)
    ax.set_yscale("log")
    ax.set_ylabel("rounds / s (higher is better)")
    ax.set_title("throughput (median of interleaved repetitions)")
    ax.legend(fontsize=7, ncol=2)
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.axhline(5.0, color="gray", lw=0.8, ls="--")
    ax2.text(nodes[-1], 5.0, "target 5× (MLP, n=16) ", ha="right", va="bottom", fontsize=8, color="gray")
    ax2.set_yscale("log")
    fast = df[df.impl != "reference"]["speedup"]
    ax2.set_ylim(min(0.8, fast.min() * 0.8), max(7.0, fast.max() * 1.3))
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax2.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if round(v, 6) in (0.3, 0.5, 2, 3, 5) else ""))
    ax2.set_ylabel("speedup over reference (× rounds/s)")
    ax2.set_title("engine ÷ reference, same run")
    ax2.legend(fontsize=7, loc="upper left", ncol=2)
    threads, tun = int(df["threads"].iloc[0]), df["glibc_tunables"].iloc[0]
    fig.suptitle(f"dice_repro engine vs per-node reference — mnist5k, CPU, {threads} thread(s)"
                 + (f", GLIBC_TUNABLES={tun}" if tun else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary(df: pd.DataFrame) -> str:
    lines = []
    wide = df.pivot_table(index=["model", "batch", "nodes"], columns="impl", values="ms_per_round")
    eng = df[df.impl == "engine"].set_index(["model", "batch", "nodes"])
    tr = df[df.impl == "engine_train"].set_index(["model", "batch", "nodes"])
    lines.append(f"{'model':5} {'B':>3} {'n':>3} | {'engine':>9} {'train()':>9} {'reference':>9}  ms/round"
                 f" | {'speedup':>7} {'train()':>7} | {'GFLOP/s':>7} {'matmul':>7} {'frac':>5}")
    for key, row in wide.iterrows():
        e = eng.loc[key]
        lines.append(
            f"{key[0]:5} {key[1]:3d} {key[2]:3d} | {row['engine']:9.1f} {row['engine_train']:9.1f} {row['reference']:9.1f}"
            f"          | {e['speedup']:6.2f}x {tr.loc[key, 'speedup']:6.2f}x | {e['achieved_gflops']:7.1f}"
            f" {e['matmul_gflops']:7.1f} {e['fraction_of_matmul']:5.2f}"
        )
    for b in sorted(df.batch.unique()):
        key = ("mlp", b, 16)
        if key in eng.index:
            s = eng.loc[key, "speedup"]
            lines.append(f"MLP n=16 B={b}: engine/reference speedup {s:.2f}x (target >= 5x: {'met' if s >= 5 else 'NOT met'})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 4, 16 only, 3 repetitions, shorter repetitions")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: see README, 2 threads on the 2-vCPU box is slower and erratic)")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--nodes", default=None, help="comma list (default 4,16,32,64; --quick 4,16)")
    ap.add_argument("--batches", default="32,64")
    ap.add_argument("--tag", default="", help="suffix for the output files, e.g. 'threads2' -> engine_threads2.csv")
    cfg = ap.parse_args(argv)
    cfg.nodes = [int(v) for v in (cfg.nodes or ("4,16" if cfg.quick else "4,16,32,64")).split(",")]
    cfg.models = cfg.models.split(",")
    cfg.batches = [int(v) for v in cfg.batches.split(",")]
    cfg.reps = 3 if cfg.quick else 5
    cfg.min_reps = 3
    cfg.slow_rep_s = 4.0  # a repetition (all implementations) slower than this: only min_reps of them
    cfg.target_s = 0.25 if cfg.quick else 0.6  # wall time of one repetition of one implementation
    cfg.min_rounds, cfg.max_rounds = 3, (10 if cfg.quick else 20)
    return cfg


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    out = HERE / "results"
    out.mkdir(parents=True, exist_ok=True)
    tag = f"_{cfg.tag}" if cfg.tag else ""
    start = time.perf_counter()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch thread(s), GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')}")
    ds = data.load_dataset("mnist5k")
    measure_config(ds, "mlp", 4, 8, argparse.Namespace(**{**vars(cfg), "reps": 1, "max_rounds": 3}))  # process warm-up

    rows: list[dict] = []
    for model in cfg.models:
        for batch in cfg.batches:
            for nodes in cfg.nodes:
                t0 = time.perf_counter()
                got, _ = measure_config(ds, model, nodes, batch, cfg)
                rows.extend(got)
                e, t, r = (next(x for x in got if x["impl"] == i) for i in IMPLS)
                print(f"{model:4} B={batch:<3d} n={nodes:<3d} engine {e['ms_per_round']:8.1f} ms  train() {t['ms_per_round']:8.1f} ms"
                      f"  reference {r['ms_per_round']:8.1f} ms  speedup {e['speedup']:5.2f}x  "
                      f"{e['achieved_gflops']:5.1f} GFLOP/s = {e['fraction_of_matmul']:.2f} of bmm   ({time.perf_counter() - t0:.0f} s)",
                      flush=True)

    df = pd.DataFrame(rows)
    csv = out / f"engine{tag}.csv"
    df.to_csv(csv, index=False, float_format="%.6g")
    png = out / f"engine{tag}.png"
    plot(df, png)

    prof_parts = []
    if "mlp" in cfg.models:
        prof_parts.append(profile_round(ds, "mlp", 16, 32))
    if "cnn" in cfg.models:
        prof_parts.append(profile_round(ds, "cnn", 16, 32))
    prof_txt = out / f"engine_profile{tag}.txt"
    prof_txt.write_text("\n\n".join(prof_parts) + "\n")

    print("\n" + summary(df))
    if prof_parts:
        print("\nwhere the time goes (top ops by self CPU time, one round):")
        print(prof_parts[0])
    print(f"wrote {csv.relative_to(HERE.parent)}, {png.relative_to(HERE.parent)}, {prof_txt.relative_to(HERE.parent)}"
          f" in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
