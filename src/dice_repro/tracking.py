"""Weights & Biases tracking: the only module that imports wandb.

Offline by default into ``results/wandb`` (no account needed; ``wandb sync`` later), ``online``
on request, ``disabled`` in tests; the ``WANDB_MODE`` environment variable wins over config.
A W&B failure warns and never loses the job's results: every job writes its files first.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")


def resolve_mode(mode: str | None) -> str:
    """``WANDB_MODE`` wins over the configured mode; anything unknown falls back to offline with a warning."""
    chosen = os.environ.get("WANDB_MODE") or mode or "offline"
    if chosen not in MODES:
        warnings.warn(f"unknown W&B mode {chosen!r} (allowed: {', '.join(MODES)}); using 'offline'", stacklevel=2)
        chosen = "offline"
    return chosen


def _point_wandb_into(directory: Path) -> None:
    """Keep every W&B file (runs, cache, config, artifacts) inside ``directory``, never in ``$HOME``."""
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                     ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
        path = directory / sub if sub else directory
        path.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(path)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")


class Tracker:
    """A thin handle on one W&B run; every method is a no-op when tracking is off or failed."""

    def __init__(self, run: Any | None):
        self._run = run

    @property
    def active(self) -> bool:
        return self._run is not None

    def _guard(self, what: str, fn) -> None:
        if self._run is None:
            return
        try:
            fn()
        except Exception as exc:  # W&B must never cost a job its results
            warnings.warn(f"W&B could not {what}: {exc}", stacklevel=3)

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        self._guard("log metrics", lambda: self._run.log(values, step=step))

    def summary(self, values: dict[str, Any]) -> None:
        self._guard("write the summary", lambda: self._run.summary.update(values))

    def table(self, name: str, frame, max_rows: int = 10_000) -> None:
        """Log a pandas frame as a W&B table (the first ``max_rows`` rows; the full table is in results/)."""
        import wandb

        rows = frame.head(max_rows).astype(object)
        rows = rows.where(rows.notna(), None)  # W&B rejects pandas' NA
        self._guard("log a table", lambda: self._run.log({name: wandb.Table(dataframe=rows)}))

    def image(self, name: str, path: str | Path) -> None:
        import wandb

        self._guard("log an image", lambda: self._run.log({name: wandb.Image(str(path))}))


@contextmanager
def tracked_run(
    job_type: str,
    config: dict[str, Any],
    group: str,
    name: str,
    directory: str | Path = "results/wandb",
    mode: str | None = None,
    project: str = "dice-repro",
) -> Iterator[Tracker]:
    """One W&B run for one compute job: grouped by experiment, typed by rule, carrying the full config."""
    mode = resolve_mode(mode)
    if mode == "disabled":
        yield Tracker(None)
        return
    run = None
    try:
        _point_wandb_into(Path(directory).resolve())
        import wandb

        run = wandb.init(project=os.environ.get("WANDB_PROJECT") or project, group=group, job_type=job_type, name=name, config=config,
                         mode=mode, dir=os.environ["WANDB_DIR"], reinit="create_new")
    except Exception as exc:
        warnings.warn(f"W&B tracking is off for this job ({exc}); results are still written to results/", stacklevel=3)
    tracker = Tracker(run)
    try:
        yield tracker
    finally:
        if run is not None:
            tracker._guard("finish the run", run.finish)
