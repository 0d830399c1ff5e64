"""Command-line entry points of the application experiments: ``anomaly``, ``collaborators``, ``contribution``,
and ``app-figures``, which draws their figures.

Each reads the base run's settings (JSON or ``@file.json``, like every ``python -m dice_repro`` command),
repeats the experiment over the requested seeds, writes its tables atomically with the config that
made them, logs one W&B run and prints the headline numbers. ``register`` adds the three sub-commands
to an argparse sub-parser set; ``python -m dice_repro.apps.commands`` runs them standalone.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd

from dice_repro import cli  # a module import: works whichever of cli and this module is imported first
from dice_repro.apps.anomaly import detection_metrics, detection_scores
from dice_repro.apps.collaborators import policy_summary, selection_experiment
from dice_repro.apps.contribution import ESTIMATORS, agreement, contribution_experiment
from dice_repro.apps.corruption import Corruption, pick_nodes
from dice_repro.outputs import write_table
from dice_repro.settings import RunSettings, SettingsError
from dice_repro.tracking import tracked_run
from dice_repro.trajectory import build_run, get_dataset

DEFAULT_CORRUPTIONS = ("label_permutation", "random_labels", "gaussian_noise:100", "gaussian_noise:1")


def _variant(settings: RunSettings, **changes: Any) -> RunSettings:
    """The base settings with some values replaced, validated again."""
    variant = dataclasses.replace(settings, **changes)
    variant.check()
    return variant


def _describe(settings: RunSettings) -> dict[str, Any]:
    """The setting columns every application table carries."""
    return {key: getattr(settings, key) for key in ("experiment", "dataset", "model", "topology", "nodes")}


def _seeds(args: argparse.Namespace, settings: RunSettings) -> list[int]:
    """The seeds to repeat over: ``--seeds``, else the settings' own."""
    return args.seeds or [settings.seed]


def _finish(args: argparse.Namespace, job: str, settings: RunSettings, config: dict[str, Any],
            tables: dict[str, pd.DataFrame], summary: dict[str, float], started: float) -> None:
    """Write the job's tables (atomically, with their config), then log one W&B run with the summary."""
    for name, table in tables.items():
        write_table(table, Path(args.out_dir) / f"{name}.csv", config)
    with tracked_run(job, config, settings.experiment, f"{job}/{args.run_id or settings.experiment}",
                     args.wandb_dir, args.wandb_mode) as tracker:
        tracker.summary(summary | {"seconds": time.perf_counter() - started})
        for name, table in tables.items():
            tracker.table(name, table)


def anomaly_command(args: argparse.Namespace) -> int:
    """Malicious-neighbour detection: anomaly_scores.csv (every scored in-neighbour), anomaly.csv (the metrics)."""
    started = time.perf_counter()
    s = cli.load_settings(args)
    ds = get_dataset(s, args.data)
    corruptions = [Corruption.parse(text) for text in args.corruptions]
    config = {"job": "anomaly", "settings": s.to_dict(), "seeds": _seeds(args, s), "corruptions": args.corruptions,
              "batch_sizes": args.batch_sizes, "lrs": args.lrs, "bootstrap": args.bootstrap}
    frames = []
    for batch_size, lr, seed in product(args.batch_sizes or [s.batch_size], args.lrs or [s.lr], _seeds(args, s)):
        frames.append(detection_scores(build_run(_variant(s, batch_size=batch_size, lr=lr, seed=seed), ds), corruptions))
    scores = pd.concat(frames, ignore_index=True).assign(**_describe(s))
    metrics = detection_metrics(scores, args.bootstrap).assign(**_describe(s))
    summary = {f"{r.corruption}/B{r.batch_size}/lr{r.lr:g}/{r.scorer}/{m}": getattr(r, m)
               for r in metrics.itertuples() for m in ("auc", "p_at_1")}
    _finish(args, "anomaly", s, config, {"anomaly_scores": scores, "anomaly": metrics}, summary, started)
    cols = ["corruption", "batch_size", "lr", "scorer", "auc", "auc_low", "auc_high", "p_at_1", "p_at_1_low",
            "p_at_1_high", "chance_p_at_1", "trials"]
    print(metrics[cols].to_string(index=False, float_format="%.3f"))
    return 0


def collaborators_command(args: argparse.Namespace) -> int:
    """Collaborator selection: collaborators.csv (accuracy per policy and seed) and reciprocity.csv."""
    started = time.perf_counter()
    s = cli.load_settings(args)
    ds = get_dataset(s, args.data)
    corruption = Corruption.parse(args.bad_kind)
    warmup = args.warmup_rounds or s.rounds_per_epoch
    config = {"job": "collaborators", "settings": s.to_dict(), "seeds": _seeds(args, s),
              "bad_fraction": args.bad_fraction, "bad_kind": args.bad_kind, "warmup_rounds": warmup, "keep": args.keep}
    results, reciprocity = [], []
    for seed in _seeds(args, s):
        bad = pick_nodes(s.nodes, args.bad_fraction, seed)
        res, rec = selection_experiment(build_run(_variant(s, seed=seed), ds), bad, corruption, warmup, args.keep)
        results.append(res.assign(seed=seed, bad_nodes=" ".join(map(str, bad))))
        reciprocity.append(rec.assign(seed=seed))
    table = pd.concat(results, ignore_index=True).assign(keep=args.keep, warmup_rounds=warmup, **_describe(s))
    recip = pd.concat(reciprocity, ignore_index=True).assign(**_describe(s))
    summary = policy_summary(table)
    _finish(args, "collaborators", s, config, {"collaborators": table, "reciprocity": recip},
            {f"{policy}/{col}": float(v) for policy, row in summary.iterrows() for col, v in row.items()}, started)
    print(summary.to_string(float_format="%.3f"))
    return 0


def contribution_command(args: argparse.Namespace) -> int:
    """Contribution shares: contribution.csv (per node: estimates, shares, leave-one-node-out ground truth)."""
    started = time.perf_counter()
    s = cli.load_settings(args)
    ds = get_dataset(s, args.data)
    corruption = Corruption.parse(args.bad_kind)
    config = {"job": "contribution", "settings": s.to_dict(), "seeds": _seeds(args, s),
              "bad_fraction": args.bad_fraction, "bad_kind": args.bad_kind, "estimators": args.estimators}
    frames = []
    for seed in _seeds(args, s):
        bad = pick_nodes(s.nodes, args.bad_fraction, seed)
        frames.append(contribution_experiment(build_run(_variant(s, seed=seed), ds), bad, corruption, args.estimators)
                      .assign(seed=seed))
    table = pd.concat(frames, ignore_index=True).assign(**_describe(s))
    rhos = agreement(table, args.bootstrap)
    means = rhos.groupby(["nodes", "estimator"], sort=False)["spearman"].mean()
    _finish(args, "contribution", s, config, {"contribution": table},
            {f"{name}/spearman_{nodes}_mean": float(v) for (nodes, name), v in means.items()}, started)
    print(rhos.to_string(index=False, float_format="%.3f"))
    print("mean Spearman over seeds:", {f"{name} ({nodes} nodes)": round(float(v), 3) for (nodes, name), v in means.items()})
    return 0


def app_figures_command(args: argparse.Namespace) -> int:
    """Draw every application figure whose table exists (PNG and PDF), then log the images in one W&B run."""
    from dice_repro.apps.figures import make_app_figures

    written = make_app_figures(args.tables_dir, args.out_dir)
    if not written:
        raise FileNotFoundError(f"no application table (anomaly_scores.csv, collaborators.csv, ...) in {args.tables_dir}")
    config = {"job": "app_figures", "tables_dir": str(args.tables_dir), "figures": [p.stem for p in written]}
    with tracked_run("app_figures", config, "apps", f"app_figures/{args.run_id or 'all'}",
                     args.wandb_dir, args.wandb_mode) as tracker:
        for path in written:
            tracker.image(path.stem, path)
    print("wrote", ", ".join(str(p) for p in written))
    return 0


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--settings", required=True, help="base run settings as JSON, or @file.json")
    p.add_argument("--data", default=None, help="prepared data set file (default: load from settings)")
    p.add_argument("--out-dir", default="results/tables", help="folder of the CSV tables")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="repeat over these seeds (default: the settings' seed)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the intervals")
    cli.add_tracking_args(p)


def _harm_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bad-fraction", type=float, default=0.25, help="fraction of nodes whose whole local data is corrupted")
    p.add_argument("--bad-kind", default="random_labels",
                   help="their corruption: label_permutation, random_labels or gaussian_noise:STD")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``anomaly``, ``collaborators``, ``contribution`` and ``app-figures`` sub-commands."""
    p = sub.add_parser("anomaly", help="malicious-neighbour detection: ROC AUC and precision@1 vs baselines")
    _common_args(p)
    p.add_argument("--corruptions", nargs="+", default=list(DEFAULT_CORRUPTIONS),
                   help="label_permutation, random_labels, gaussian_noise:STD (one trial set each)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="repeat over batch sizes (default: the settings')")
    p.add_argument("--lrs", type=float, nargs="+", default=None, help="repeat over learning rates (default: the settings')")
    p.set_defaults(func=anomaly_command)

    p = sub.add_parser("collaborators", help="collaborator selection by DICE vs all / random neighbours; reciprocity")
    _common_args(p)
    _harm_args(p)
    p.add_argument("--keep", type=int, default=2, help="in-neighbours each node keeps after the warm-up")
    p.add_argument("--warmup-rounds", type=int, default=None, help="rounds of influence accumulation (default: one epoch)")
    p.set_defaults(func=collaborators_command)

    p = sub.add_parser("contribution", help="contribution shares vs leave-one-node-out retraining")
    _common_args(p)
    _harm_args(p)
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS)
    p.set_defaults(func=contribution_command)

    p = sub.add_parser("app-figures", help="draw the application figures from their tables (PNG and PDF)")
    p.add_argument("--tables-dir", required=True, help="folder of anomaly_scores.csv, collaborators.csv, ...")
    p.add_argument("--out-dir", required=True, help="folder of the figures")
    cli.add_tracking_args(p)
    p.set_defaults(func=app_figures_command)


def main(argv: list[str] | None = None) -> int:
    """Run one application sub-command standalone."""
    parser = argparse.ArgumentParser(prog="python -m dice_repro.apps.commands", description=__doc__)
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (SettingsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
