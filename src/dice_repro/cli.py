"""``python -m dice_repro <command>``: the calls the Snakemake rules make, one job each."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from dice_repro.settings import RunSettings, SettingsError


def load_settings(args: argparse.Namespace) -> RunSettings:
    raw = json.loads(Path(args.settings[1:]).read_text()) if args.settings.startswith("@") else json.loads(args.settings)
    return RunSettings.from_dict(raw)


def add_tracking_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wandb-mode", default=None, help="offline (default), online or disabled; WANDB_MODE wins")
    p.add_argument("--wandb-dir", default="results/wandb", help="where offline W&B runs are written")
    p.add_argument("--run-id", default=None, help="name of this run (default: derived from the output path)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trajectory", required=True, help="trajectory.pt written by `train`")
    p.add_argument("--data", default=None, help="prepared data set file (default: load from settings)")
    p.add_argument("--out", required=True, help="output CSV table")
    add_tracking_args(p)


def cmd_topology(args: argparse.Namespace) -> int:
    from dice_repro.topology import draw, make_topology, properties

    top = make_topology(args.name, args.nodes, seed=args.seed, path=args.path)
    props = properties(top)
    if args.json:
        print(json.dumps(props, indent=1))
    else:
        for key, value in props.items():
            print(f"{key:>18}: {value}")
    if args.draw:
        draw(top, args.draw)
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    from dice_repro import data
    from dice_repro.outputs import sidecar

    s = load_settings(args)
    ds = data.load_dataset(s.dataset, s.data_dir, s.download, s.image_size)
    data.save_dataset(ds, args.out)
    info = {"dataset": s.dataset, "train": len(ds.y_train), "test": len(ds.y_test), "input_shape": list(ds.input_shape),
            "num_classes": ds.num_classes, "sha256": _sha256(args.out)}
    sidecar(args.out).write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return 0


def _sha256(path: str) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cmd_train(args: argparse.Namespace) -> int:
    from dice_repro.tracking import tracked_run
    from dice_repro.trajectory import build_run, get_dataset, save_trajectory, train_run

    s = load_settings(args)
    name = args.run_id or Path(args.out).parent.name
    run = build_run(s, get_dataset(s, args.data))
    with tracked_run("train", s.to_dict(), s.experiment, f"train/{name}", args.wandb_dir, args.wandb_mode) as tracker:
        start = time.perf_counter()

        def on_round(t, loss, probe):
            tracker.log({"train_loss": float(loss.mean()), "probe_loss": float(probe.mean()),
                         "probe_loss_max": float(probe.max())}, step=t)

        result = train_run(run, on_round=on_round if tracker.active else None)
        acc = save_trajectory(run, result, args.out)
        tracker.summary({"test_accuracy_mean": float(acc.mean()), "seconds": time.perf_counter() - start,
                         "rounds": s.rounds, "parameters": run.fmodel.size})
    print(f"trained {s.rounds} rounds on {s.nodes} nodes; mean test accuracy {float(acc.mean()):.3f} -> {args.out}")
    return 0


def _field_command(args: argparse.Namespace, job: str) -> int:
    from dice_repro.influence.groundtruth import groundtruth_field
    from dice_repro.influence.estimators import estimate_field
    from dice_repro.outputs import write_table
    from dice_repro.tracking import tracked_run
    from dice_repro.trajectory import load_run

    run, saved = load_run(args.trajectory, args.data)
    s = run.settings
    name = args.run_id or Path(args.out).parent.name
    with tracked_run(job, s.to_dict(), s.experiment, f"{job}/{name}", args.wandb_dir, args.wandb_mode) as tracker:
        start = time.perf_counter()
        frame = groundtruth_field(run, saved) if job == "groundtruth" else estimate_field(run, saved)
        seconds = time.perf_counter() - start
        frame.insert(0, "run", name)
        write_table(frame, args.out, {"run": name, "settings": s.to_dict(), "job": job})
        units = int(frame["unit"].nunique())
        tracker.summary({"units": units, "seconds": seconds, "ms_per_unit": 1000 * seconds / max(units, 1)})
        tracker.table(job, frame)
    print(f"{job}: {units} units in {seconds:.1f}s -> {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from dice_repro.compare import run_compare

    run_compare(args.inputs, args.out_dir, wandb_dir=args.wandb_dir, wandb_mode=args.wandb_mode,
                experiment=args.experiment, bootstrap=args.bootstrap, max_points=args.max_points)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from dice_repro.plots import make_figures

    plan = json.loads(args.plan) if args.plan else None
    make_figures(args.tables_dir, args.out_dir, wandb_dir=args.wandb_dir, wandb_mode=args.wandb_mode, plan=plan)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dice_repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("topology", help="print a mixing matrix's properties and optionally draw it")
    p.add_argument("name")
    p.add_argument("--nodes", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--path", default=None, help="matrix file for name 'file'")
    p.add_argument("--json", action="store_true")
    p.add_argument("--draw", default=None, metavar="FILE.png")
    p.set_defaults(func=cmd_topology)

    for name, func, helptext in (
        ("prepare-data", cmd_prepare_data, "load a data set once and cache it"),
        ("train", cmd_train, "train the factual trajectory of one run"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--settings", required=True, help="run settings as JSON, or @file.json")
        p.add_argument("--data", default=None, help="prepared data set file")
        p.add_argument("--out", required=True)
        add_tracking_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("groundtruth", help="counterfactual replays: the influence field G[unit, tau, node]")
    _run_args(p)
    p.set_defaults(func=lambda a: _field_command(a, "groundtruth"))
    p = sub.add_parser("estimate", help="DICE estimators: the fields E[unit, tau, node]")
    _run_args(p)
    p.set_defaults(func=lambda a: _field_command(a, "estimate"))

    from dice_repro.apps.commands import register

    register(sub)  # anomaly, collaborators, contribution, app-figures

    p = sub.add_parser("compare", help="join ground truth and estimates into the result tables")
    p.add_argument("--inputs", nargs="+", required=True, help="groundtruth.csv and estimates.csv files of the runs")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--experiment", default=None, help="only the runs of this experiment (default: all inputs)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per confidence interval")
    p.add_argument("--max-points", type=int, default=300, help="per-unit pairs kept per scatter panel in points.csv")
    add_tracking_args(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("figures", help="draw every figure from the comparison tables")
    p.add_argument("--tables-dir", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--plan", default=None,
                   help='JSON {"figure kind": [experiments]} (default: every figure the tables support)')
    add_tracking_args(p)
    p.set_defaults(func=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
