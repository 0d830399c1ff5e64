# The config expanded into runs (validated with dice_repro.settings at parse time) and shared paths.
import json
import os
from pathlib import Path

from dice_repro.workflow_config import load_pipeline

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
