"""W&B tracking: offline into the given folder, WANDB_MODE wins, failures warn and never cost results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dice_repro.tracking import tracked_run

WANDB_VARS = ("WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR",
              "WANDB_ARTIFACT_DIR", "WANDB_SILENT", "WANDB_CONSOLE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No W&B variables from outside, and a fresh HOME that must stay free of W&B files."""
    for var in WANDB_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield home
    assert not [p for p in home.rglob("*") if "wandb" in p.name.lower()], "W&B wrote into $HOME"


def offline_runs(directory: Path) -> list[Path]:
    return sorted((directory / "wandb").glob("offline-run-*"))


def test_offline_run_lands_in_the_given_folder(tmp_path):
    with tracked_run("train", {"lr": 0.1}, "exp", "train/exp/a", tmp_path / "wb", "offline") as tracker:
        assert tracker.active
        tracker.log({"loss": 1.0}, step=0)
        tracker.table("field", pd.DataFrame({"a": [1, 2]}))
        tracker.summary({"seconds": 1.0})
    runs = offline_runs(tmp_path / "wb")
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_wandb_mode_variable_wins_over_config(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with tracked_run("train", {}, "exp", "train/exp/a", tmp_path / "wb", "offline") as tracker:
        assert not tracker.active
        tracker.log({"loss": 1.0})  # a no-op, not an error
    assert not (tmp_path / "wb").exists()


def test_bad_mode_warns_and_falls_back_to_offline(tmp_path):
    with pytest.warns(UserWarning, match="unknown W&B mode 'sideways'"):
        with tracked_run("train", {}, "exp", "train/exp/a", tmp_path / "wb", "sideways") as tracker:
            assert tracker.active
    assert len(offline_runs(tmp_path / "wb")) == 1


def test_unwritable_folder_warns_and_the_job_still_writes_its_outputs(tmp_path, synthetic_tables):
    """A real job (compare) with a W&B folder that cannot be created: a warning, and all its tables."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the W&B folder should go")
    inputs = sorted(str(p) for p in (synthetic_tables.parent / "runs" / "alignment").rglob("*.csv"))
    out = tmp_path / "tables"
    proc = subprocess.run(
        [sys.executable, "-m", "dice_repro", "compare", "--inputs", *inputs, "--out-dir", str(out),
         "--bootstrap", "100", "--wandb-dir", str(blocker / "wandb"), "--wandb-mode", "offline"],
        capture_output=True, text=True, env={**os.environ}, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "W&B tracking is off for this job" in proc.stderr
    for name in ("alignment", "cascade", "points"):
        assert len(pd.read_csv(out / f"{name}.csv")) > 0
