# The config expanded into runs (validated with dice_repro.settings at parse time) and shared paths.
import json
import os
from pathlib import Path

from dice_repro.workflow_config import APP_TABLES, load_pipeline

PIPE = load_pipeline(config)
RESULTS = PIPE.results_dir
RUNS = PIPE.runs
DATASETS = PIPE.datasets()
WANDB = {"dir": f"{RESULTS}/wandb", "mode": PIPE.wandb_mode}
os.environ.setdefault("WANDB_PROJECT", PIPE.wandb_project)  # like WANDB_MODE, the variable wins over config
# Used with --use-conda (paths relative to the rule files).
CONDA_ENV = "../envs/dice_repro.yaml"


wildcard_constraints:
    dataset="|".join(DATASETS),


def data_file(wildcards):
    """The prepared data set a run trains on."""
    return f"{RESULTS}/data/{RUNS[wildcards.run].dataset}.pt"


def run_file(name):
    """Path of one of a run's files, as a wildcard pattern over {run}."""
    return f"{RESULTS}/runs/{{run}}/{name}"


def field_tables():
    """Every ground-truth and estimate table of every run."""
    return [f"{RESULTS}/runs/{run}/{name}" for run in RUNS for name in ("groundtruth.csv", "estimates.csv")]


# The application jobs (rules/applications.smk), by name; empty without `applications` in the config.
APPS = PIPE.applications
APP_SHELL = (
    "python -m dice_repro {params.app} --settings {params.settings:q} --data {input.data} --out-dir {params.out_dir}"
    " --seeds {params.seeds} {params.options} --run-id apps_{params.app}"
    " --wandb-dir {params.wandb[dir]} --wandb-mode {params.wandb[mode]} > {log} 2>&1"
)


def app_table(name):
    """Path of one application table."""
    return f"{RESULTS}/tables/{name}.csv"


def app_params(app):
    """The params every application rule passes to its command."""
    return dict(
        app=app,
        settings=APPS[app].settings.to_json(),
        seeds=" ".join(map(str, APPS[app].seeds)),
        options=APPS[app].flags(),
        out_dir=lambda w, output: Path(output[0]).parent,
        wandb=WANDB,
    )


def app_figure_files():
    """Every application figure (PNG and PDF), none without `applications`."""
    return [f"{PIPE.figures_dir}/{kind}.{ext}" for kind in PIPE.app_figures() for ext in ("png", "pdf")]
