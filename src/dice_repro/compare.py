"""Join ground-truth and estimated influence fields into the result tables.

* ``alignment.csv``: one row per (settings group, estimator, horizon, r, hop) with Pearson, Spearman,
  sign agreement and a bootstrap interval of Spearman over units (resampled within seeds).
  ``horizon_kind`` "window" rows compare DICE-E^(r) with DICE-GT^(r) (``hop`` = "all", radius ``r``)
  or one hop distance alone (``hop`` = 0, 1, …, ``r`` empty); "end" rows compare the end-of-training
  totals. An estimator is compared at every radius its field reaches (one-hop ones: r = 1 only).
* ``cascade.csv``: mean influence per source, node and hop distance (``level`` "node": each node at
  the round the perturbation first reaches it, as in DICE-GT^(r); ``level`` "hop": summed per hop).
* ``points.csv``: the per-unit (estimate, ground truth) pairs behind the scatter plots, capped per panel.

A settings group is every run of an experiment with the same settings except the seed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dice_repro import metrics
from dice_repro.influence.aggregate import dice_r, end_of_training, per_hop
from dice_repro.outputs import read_table, write_table
from dice_repro.settings import RunSettings

GROUNDTRUTH = "groundtruth"
#: Settings that do not define a comparison group: the seed is resampled over, the rest is bookkeeping.
NOT_GROUPING = ("seed", "estimators", "device", "data_dir", "download")
SETTING_COLUMNS = [f.name for f in fields(RunSettings) if f.name not in NOT_GROUPING]
FRONT = ["experiment", "group", "dataset", "model", "topology", "nodes", "batch_size", "lr"]
METRIC_COLUMNS = ["n_units", "pearson", "spearman", "sign_agreement", "spearman_ci_low", "spearman_ci_high",
                  "seeds", "n_runs"]
COMPARISON = ["estimator", "horizon_kind", "r", "hop"]
UNIT = ["run", "unit", "source", "round"]
FIELD_COLUMNS = {"run", "unit", "source", "round", "removed", "tau", "node", "hop", "final", "estimator", "value"}


def _cell(value: Any) -> Any:
    """A setting as a table cell: lists joined with "+" (as in run ids and the ablation table)."""
    return "+".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def load_fields(paths: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All field tables concatenated, and one row of settings per run (with its group label)."""
    frames, runs = [], {}
    for path in paths:
        frame, meta = read_table(path)
        missing = FIELD_COLUMNS - set(frame.columns)
        if missing:
            raise ValueError(f"{path}: not an influence field table (missing columns {sorted(missing)})")
        if "settings" not in meta:
            raise ValueError(f"{path}: its sidecar {path}.json with the run settings is missing; rerun the job that wrote it")
        for run in frame["run"].unique():
            runs[run] = meta["settings"]
        frames.append(frame)
    field = pd.concat(frames, ignore_index=True)
    settings = pd.DataFrame([{"run": run, "seed": s["seed"], **{k: _cell(s.get(k)) for k in SETTING_COLUMNS}}
                             for run, s in runs.items()])
    settings["group"] = _group_labels(settings)
    truth = set(field.loc[field["estimator"] == GROUNDTRUTH, "run"])
    orphans = sorted(set(field["run"]) - truth)
    if orphans:
        raise ValueError(f"runs {orphans} have estimates but no ground truth; pass their groundtruth.csv too")
    return field, settings


def _group_labels(settings: pd.DataFrame) -> pd.Series:
    """A readable label per run: the settings that vary within its experiment ("model=mlp, topology=ring")."""
    labels = pd.Series("", index=settings.index, dtype=object)
    for experiment, rows in settings.groupby("experiment"):
        cols = [c for c in SETTING_COLUMNS if c != "experiment" and rows[c].astype(str).nunique() > 1]
        labels[rows.index] = (rows[cols].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
                              if cols else experiment)
    return labels


def unit_pairs(field: pd.DataFrame) -> pd.DataFrame:
    """Per unit and comparison: the estimate (``estimate``) next to the ground truth (``groundtruth``)."""
    window = field[field["final"] == 0]
    reach = window.groupby(["run", "estimator"])["tau"].max().rename("reach").reset_index()
    parts = []
    for r in range(1, int(reach["reach"].max()) + 1):
        agg = dice_r(field, r).merge(reach, on=["run", "estimator"])
        parts.append(agg[agg["reach"] >= r].drop(columns="reach").assign(horizon_kind="window", hop="all"))
    parts.append(per_hop(field).assign(horizon_kind="window", r=pd.NA, hop=lambda d: d["hop"].astype(str)))
    if (field["final"] == 1).any():
        parts.append(end_of_training(field).assign(horizon_kind="end", r=pd.NA, hop="all"))
    long = pd.concat(parts, ignore_index=True)
    long["r"] = long["r"].astype("Int64")
    keys = UNIT + ["horizon_kind", "r", "hop"]
    truth = long[long["estimator"] == GROUNDTRUTH][keys + ["value"]].rename(columns={"value": GROUNDTRUTH})
    est = long[long["estimator"] != GROUNDTRUTH].rename(columns={"value": "estimate"})
    return est.merge(truth, on=keys, how="inner")


def _metrics(rows: pd.DataFrame, n_boot: int) -> dict[str, Any]:
    """The agreement numbers of one comparison (units of every seed pooled, CI resampled within seeds)."""
    x, y, seeds = rows["estimate"].to_numpy(), rows[GROUNDTRUTH].to_numpy(), rows["seed"].to_numpy()
    low, high = metrics.bootstrap_ci(x, y, "spearman", strata=seeds, n_boot=n_boot)
    return {"n_units": len(rows), "pearson": metrics.pearson(x, y), "spearman": metrics.spearman(x, y),
            "sign_agreement": metrics.sign_agreement(x, y), "spearman_ci_low": low, "spearman_ci_high": high,
            "seeds": "+".join(map(str, sorted(set(seeds)))), "n_runs": rows["run"].nunique()}


def _ordered(frame: pd.DataFrame, middle: list[str]) -> pd.DataFrame:
    """Columns in the documented order: settings front, the table's own columns, then the other settings."""
    rest = [c for c in SETTING_COLUMNS if c not in FRONT]
    return frame[FRONT + middle + rest]


def alignment_table(pairs: pd.DataFrame, settings: pd.DataFrame, n_boot: int) -> pd.DataFrame:
    """One row of agreement metrics per (settings group, estimator, horizon, r, hop)."""
    data = pairs.merge(settings, on="run")
    key = ["experiment", "group"] + COMPARISON
    rows = [{**dict(zip(key, k)), **_metrics(g, n_boot)} for k, g in data.groupby(key, sort=True, dropna=False)]
    table = pd.DataFrame(rows, columns=key + METRIC_COLUMNS)
    table = table.merge(settings.drop(columns=["run", "seed"]).drop_duplicates(["experiment", "group"]),
                        on=["experiment", "group"])
    return _ordered(table, COMPARISON + METRIC_COLUMNS)


def points_table(pairs: pd.DataFrame, settings: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """The aggregated per-unit pairs (hop "all"), at most ``max_points`` per panel (seeded draw)."""
    data = pairs[pairs["hop"] == "all"].merge(settings, on="run")
    key = ["experiment", "group", "estimator", "horizon_kind", "r"]
    rng = np.random.default_rng(0)
    keep = [g if len(g) <= max_points else g.iloc[np.sort(rng.choice(len(g), max_points, replace=False))]
            for _, g in data.groupby(key, sort=True, dropna=False)]
    table = pd.concat(keep, ignore_index=True) if keep else data
    return _ordered(table, COMPARISON + ["run", "seed", "unit", "source", "round", "estimate", GROUNDTRUTH])


def cascade_table(field: pd.DataFrame, settings: pd.DataFrame) -> pd.DataFrame:
    """Mean influence (and mean |influence|) over units per source and node, and per source and hop distance."""
    window = field[field["final"] == 0]
    arrival = window[(window["tau"] == 0.5) | ((window["tau"] == window["hop"]) & (window["hop"] >= 1))]
    hops = per_hop(field)
    parts = []
    for level, frame, by in (("node", arrival, ["source", "node", "hop", "estimator"]),
                             ("hop", hops, ["source", "hop", "estimator"])):
        data = frame.merge(settings[["run", "experiment", "group"]], on="run").assign(abs_value=lambda d: d["value"].abs())
        stats = (data.groupby(["experiment", "group"] + by, sort=True)
                 .agg(value=("value", "mean"), abs_value=("abs_value", "mean"), n_units=("value", "size"))
                 .reset_index())
        parts.append(stats.assign(level=level))
    table = pd.concat(parts, ignore_index=True)
    table["node"] = table["node"].astype("Int64")
    seeds = (settings.groupby(["experiment", "group"])["seed"]
             .agg(lambda s: "+".join(map(str, sorted(set(s))))).rename("seeds").reset_index())
    table = table.merge(seeds, on=["experiment", "group"]).merge(
        settings.drop(columns=["run", "seed"]).drop_duplicates(["experiment", "group"]), on=["experiment", "group"])
    return _ordered(table, ["level", "source", "node", "hop", "estimator", "value", "abs_value", "n_units", "seeds"])


def run_compare(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    wandb_dir: str | Path = "results/wandb",
    wandb_mode: str | None = None,
    experiment: str | None = None,
    bootstrap: int = 1000,
    max_points: int = 300,
) -> dict[str, Path]:
    """Write alignment.csv, cascade.csv and points.csv from the field tables; log them as one W&B run."""
    from dice_repro.tracking import tracked_run

    field, settings = load_fields(inputs)
    if experiment is not None:
        settings = settings[settings["experiment"] == experiment]
        if settings.empty:
            raise ValueError(f"no run of experiment {experiment!r} among the {len(inputs)} inputs")
        field = field[field["run"].isin(settings["run"])]
    pairs = unit_pairs(field)
    tables = {"alignment": alignment_table(pairs, settings, bootstrap),
              "cascade": cascade_table(field, settings),
              "points": points_table(pairs, settings, max_points)}
    out = Path(out_dir)
    config = {"inputs": [str(p) for p in inputs], "experiment": experiment, "bootstrap": bootstrap,
              "max_points": max_points, "runs": sorted(settings["run"])}
    paths = {}
    for name, table in tables.items():
        paths[name] = out / f"{name}.csv"
        write_table(table, paths[name], {"job": "compare", **config})
    name = experiment or "all"
    with tracked_run("compare", config, name, f"compare/{name}", wandb_dir, wandb_mode) as tracker:
        for key, table in tables.items():
            tracker.table(key, table.astype(object).where(table.notna(), None))  # W&B tables reject pd.NA
        tracker.summary({f"{key}_rows": len(table) for key, table in tables.items()})
    print(json.dumps({key: len(table) for key, table in tables.items()}), "rows ->", out)
    return paths
