"""The README, .ci/run, pyproject.toml and environment.yml stay in step."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    commands = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith(("#", "set ", "cd "))]
    assert commands == ['pip install -e ".[test]" && snakemake --cores 8', "pytest"]
    for command in commands:
        assert f"\n{command}\n" in readme, f"README lacks the command {command!r}"


def test_environment_yml_installs_the_same_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=")[1] >= project["requires-python"].removeprefix(">=")
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == ['-e ".[test]"']
    assert "test" in project["optional-dependencies"] and "cluster" in project["optional-dependencies"]


def test_torch_pins_respect_the_machine_caps():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(re.fullmatch(r"torch>=[\d.]+,<=2\.14\.1", d) for d in deps)
    assert any(re.fullmatch(r"torchvision>=[\d.]+,<=0\.29\.1", d) for d in deps)


def test_topology_command_prints_json_and_draws(tmp_path):
    out = subprocess.run([sys.executable, "-m", "dice_repro", "topology", "exponential", "--nodes", "16", "--json",
                          "--draw", str(tmp_path / "g.png")], capture_output=True, text=True, check=True)
    props = json.loads(out.stdout)
    assert props["row_sums_ok"] and props["doubly_stochastic"]
    assert abs(props["lambda2"] - 0.6) < 1e-3
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_bad_settings_fail_with_the_key_named():
    out = subprocess.run([sys.executable, "-m", "dice_repro", "train", "--settings", '{"batch_sise": 3}', "--out", "x.pt"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown setting(s) 'batch_sise'" in out.stderr
