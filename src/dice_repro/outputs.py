"""Writing results so that a file under its final name is always complete and carries its config."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch


def _atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Write via a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide results from other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def sidecar(path: str | Path) -> Path:
    """The JSON file next to a table that records the config which made it."""
    return Path(str(path) + ".json")


def write_table(frame: pd.DataFrame, path: str | Path, config: dict[str, Any]) -> None:
    """Write a CSV table and its config sidecar, both atomically (sidecar first, table last)."""
    _atomic_write(sidecar(path), lambda tmp: Path(tmp).write_text(json.dumps(config, indent=1, sort_keys=True, default=str)))
    _atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def read_table(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a table and the config it carries."""
    config = json.loads(sidecar(path).read_text()) if sidecar(path).exists() else {}
    return pd.read_csv(path), config
