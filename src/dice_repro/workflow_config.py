"""The pipeline config (config/*.yaml + the ablation table) → the runs and figures it asks for.

Used by the Snakefile at parse time and by the tests. Every run is validated here with
``RunSettings.from_dict``, so a bad value or combination fails before any job starts.

Run ids are filesystem safe and readable: ``<experiment>/<key>~<value>_…_seed~<seed>`` for grid
runs, and ``ablation/<Paramspace instance>_seed~<seed>`` for rows of the ablation table.

The optional ``applications`` block configures the ``anomaly``, ``collaborators`` and ``contribution``
commands: one job each, its base run settings validated here as experiment ``apps_<name>``.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from dice_repro.settings import RunSettings, SettingsError

#: The figures an experiment can ask for (one file per kind: figures/<kind>.png and .pdf).
FIGURE_KINDS = ("alignment", "validity_map", "cascade_graph", "cascade_hops", "rhop", "ablations")
#: Rows of the ablation table become experiments named with this prefix (one W&B group each).
ABLATION_PREFIX = "ablation-"
#: Set by the pipeline per run, never by the config.
RESERVED = ("experiment", "seed")
#: Settings that hold lists; in the ablation table their items are joined with "+".
LIST_SETTINGS = ("estimators", "unit_rounds", "unit_nodes")
DEFAULT_SEEDS = (222,)
_SAFE = re.compile(r"^[A-Za-z0-9._+~=/-]+$")
_DATA_KEYS = ("dataset", "data_dir", "download", "image_size")
_FLOATS = {f.name for f in fields(RunSettings) if isinstance(f.default, float)}
#: Application → the tables its command writes (``<results_dir>/tables/<name>.csv``).
APP_TABLES = {"anomaly": ("anomaly", "anomaly_scores"), "collaborators": ("collaborators", "reciprocity"),
              "contribution": ("contribution",)}
#: Application → the figures ``app-figures`` draws from its tables (dice_repro.apps.figures.FIGURES).
APP_FIGURES = {"anomaly": ("anomaly_bars", "anomaly_roc"), "collaborators": ("selection", "reciprocity"),
               "contribution": ("contribution",)}


class ConfigError(ValueError):
    """A bad pipeline config; the message says where (experiment, run or table row) and what is wrong."""


class Application(NamedTuple):
    """One configured application job: its base run settings, the seeds it repeats over, its command's options."""

    settings: RunSettings
    seeds: list[int]
    options: dict[str, Any]

    def flags(self) -> str:
        """The options as the command's flags (``bad_fraction: 0.25`` → ``--bad-fraction 0.25``), shell-quoted."""
        return option_flags(self.options)


def option_flags(options: dict[str, Any]) -> str:
    """Render ``{flag: value}`` as command-line flags: lists become several values, ``_`` becomes ``-``."""
    parts: list[str] = []
    for key, value in options.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        parts += [f"--{key.replace('_', '-')}", *(shlex.quote(str(v)) for v in values)]
    return " ".join(parts)


@dataclass(frozen=True)
class Pipeline:
    """Everything the rules need: where results go, the runs, and which figures to draw from which experiments."""

    results_dir: str
    figures_dir: str
    wandb_mode: str
    wandb_project: str
    bootstrap: int
    max_points: int
    runs: dict[str, RunSettings]
    figures: dict[str, list[str]]
    applications: dict[str, Application] = field(default_factory=dict)

    def app_figures(self) -> list[str]:
        """The application figures to draw, in ``APP_FIGURES`` order (none without ``applications``)."""
        return [kind for app, kinds in APP_FIGURES.items() if app in self.applications for kind in kinds]

    def datasets(self) -> dict[str, RunSettings]:
        """One settings object per dataset, for ``prepare-data`` (runs sharing a dataset must agree on how to load it)."""
        chosen: dict[str, tuple[str, RunSettings]] = {}
        apps = [(f"application {name}", app.settings) for name, app in self.applications.items()]
        for run_id, s in [*self.runs.items(), *apps]:
            if s.dataset not in chosen:
                chosen[s.dataset] = (run_id, s)
                continue
            other_id, other = chosen[s.dataset]
            for key in _DATA_KEYS[1:]:
                if getattr(s, key) != getattr(other, key):
                    raise ConfigError(
                        f"runs {other_id} and {run_id} load dataset {s.dataset!r} with different {key} "
                        f"({getattr(other, key)!r} vs {getattr(s, key)!r}); make them agree"
                    )
        return {name: s for name, (_, s) in chosen.items()}


def _fmt(value: Any) -> str:
    """A setting's value as it appears in a run id."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def _settings(where: str, raw: dict[str, Any]) -> RunSettings:
    """Validate one run's settings; errors name the run."""
    try:
        s = RunSettings.from_dict(raw)
        s.unit_round_list()
        s.unit_node_list()
    except (SettingsError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return s


def _run_id(experiment: str, instance: str, seed: int) -> str:
    run_id = f"{experiment}/{instance + '_' if instance else ''}seed~{seed}"
    if not _SAFE.match(run_id):
        raise ConfigError(f"run id {run_id!r} has characters unsafe in file names; use letters, digits and ._+-= in values")
    return run_id


def _grid_points(grid: dict[str, list] | list[dict[str, list]] | None) -> list[dict[str, Any]]:
    """The cartesian product of a grid block, or the union of several blocks (duplicates dropped)."""
    blocks = grid if isinstance(grid, list) else [grid or {}]
    points: list[dict[str, Any]] = []
    for block in blocks:
        keys = list(block)
        for values in itertools.product(*(block[k] for k in keys)):
            point = dict(zip(keys, values))
            if point not in points:
                points.append(point)
    return points


def expand_experiment(name: str, spec: dict[str, Any], defaults: dict[str, Any]) -> dict[str, RunSettings]:
    """The runs of one experiment: defaults ← settings ← each grid point, for every seed."""
    base = {**defaults, **(spec.get("settings") or {})}
    runs: dict[str, RunSettings] = {}
    for point in _grid_points(spec.get("grid")):
        for seed in spec.get("seeds") or DEFAULT_SEEDS:
            run_id = _run_id(name, "_".join(f"{k}~{_fmt(v)}" for k, v in point.items()), seed)
            runs[run_id] = _settings(f"experiment {name!r}, run {run_id}", {**base, **point, "experiment": name, "seed": seed})
    return runs


def _cell(key: str, text: str) -> Any:
    """One cell of the ablation table as a setting value ("+" separates list items)."""
    named = key != "estimators" and text in ("all", "first_epoch", "last_epoch")
    if key in LIST_SETTINGS and not named:
        return [yaml.safe_load(item) for item in text.split("+")]
    value = yaml.safe_load(text)
    return float(value) if key in _FLOATS and isinstance(value, (int, str)) else value


def read_ablations(path: str | Path) -> pd.DataFrame:
    """The ablation table: one row per variant, a unique ``name`` and setting overrides (empty cell = no override)."""
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    table.columns = [c.strip() for c in table.columns]
    if "name" not in table.columns:
        raise ConfigError(f"{path}: the ablation table needs a 'name' column (one unique name per row)")
    bad = [n for n in table["name"] if not re.fullmatch(r"[A-Za-z0-9_-]+", n)]
    if bad:
        raise ConfigError(f"{path}: ablation names {bad} must be letters, digits, '_' or '-'")
    dupes = sorted(set(table["name"][table["name"].duplicated()]))
    if dupes:
        raise ConfigError(f"{path}: ablation names {dupes} appear more than once; names must be unique")
    reserved = [c for c in table.columns if c in RESERVED]
    if reserved:
        raise ConfigError(f"{path}: columns {reserved} are set by the pipeline; give seeds in the config's ablations.seeds")
    return table


def expand_ablations(spec: dict[str, Any], defaults: dict[str, Any]) -> dict[str, RunSettings]:
    """The runs of the ablation table, one experiment per row, ids from Snakemake's ``Paramspace``."""
    from snakemake.utils import Paramspace

    path = spec["table"]
    table = read_ablations(path)
    space = Paramspace(table, filename_params="*")
    base = {**defaults, **(spec.get("settings") or {})}
    runs: dict[str, RunSettings] = {}
    for (i, row), instance in zip(table.iterrows(), space.instance_patterns):
        where = f"{path} row {i + 1} ({row['name']})"
        try:
            overrides = {k: _cell(k, v.strip()) for k, v in row.items() if k != "name" and v.strip()}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: unreadable cell ({exc})") from None
        experiment = ABLATION_PREFIX + row["name"]
        for seed in spec.get("seeds") or DEFAULT_SEEDS:
            run_id = _run_id("ablation", instance, seed)
            runs[run_id] = _settings(f"{where}, run {run_id}", {**base, **overrides, "experiment": experiment, "seed": seed})
    return runs


def _figure_plan(config: dict[str, Any], ablation_runs: Iterable[RunSettings]) -> dict[str, list[str]]:
    """Figure kind → the experiments drawn in it, in config order."""
    plan: dict[str, list[str]] = {}
    for name, spec in config["experiments"].items():
        for kind in spec.get("figures") or ():
            plan.setdefault(kind, []).append(name)
    variants = list(dict.fromkeys(s.experiment for s in ablation_runs))
    if variants:
        plan["ablations"] = plan.get("ablations", []) + variants
    return {kind: plan[kind] for kind in FIGURE_KINDS if kind in plan}


def expand_applications(spec: dict[str, Any], defaults: dict[str, Any], bootstrap: int) -> dict[str, Application]:
    """The application jobs: defaults ← each application's settings, as experiment ``apps_<name>``.

    Options default to ``bootstrap`` resamples (``compare.bootstrap``); every batch size and learning rate
    the anomaly job repeats over is validated too.
    """
    apps: dict[str, Application] = {}
    for name in APP_TABLES:
        if name not in spec:
            continue
        app = spec[name] or {}
        seeds = list(app.get("seeds") or DEFAULT_SEEDS)
        options = {"bootstrap": bootstrap, **(app.get("options") or {})}
        base = {**defaults, **(app.get("settings") or {}), "experiment": f"apps_{name}", "seed": seeds[0]}
        settings = _settings(f"application {name!r}", base)
        for batch_size in options.get("batch_sizes") or ():
            _settings(f"application {name!r}, batch_sizes {batch_size}", {**base, "batch_size": batch_size})
        for lr in options.get("lrs") or ():
            _settings(f"application {name!r}, lrs {lr}", {**base, "lr": float(lr)})
        apps[name] = Application(settings, seeds, options)
    return apps


def load_pipeline(config: dict[str, Any]) -> Pipeline:
    """Expand a (schema-validated) config into runs and a figure plan; raise ``ConfigError`` on bad runs."""
    defaults = dict(config.get("defaults") or {})
    runs: dict[str, RunSettings] = {}
    for name, spec in config["experiments"].items():
        runs.update(expand_experiment(name, spec, defaults))
    ablation_runs: dict[str, RunSettings] = {}
    if config.get("ablations"):
        ablation_runs = expand_ablations(config["ablations"], defaults)
    runs.update(ablation_runs)
    wandb = config.get("wandb") or {}
    compare = config.get("compare") or {}
    bootstrap = int(compare.get("bootstrap", 1000))
    return Pipeline(
        results_dir=str(config.get("results_dir", "results")),
        figures_dir=str(config.get("figures_dir", "figures")),
        wandb_mode=wandb.get("mode", "offline"),
        wandb_project=wandb.get("project", "dice-repro"),
        bootstrap=bootstrap,
        max_points=int(compare.get("max_points", 300)),
        runs=runs,
        figures=_figure_plan(config, ablation_runs.values()),
        applications=expand_applications(config.get("applications") or {}, defaults, bootstrap),
    )
