"""The Snakemake pipeline: config expansion and validation, dry-runs, lint, the comparison tables,
and one end-to-end run of the smoke config with W&B offline into a temporary folder."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from dice_repro.workflow_config import APP_FIGURES, APP_TABLES, ConfigError, load_pipeline, option_flags, read_ablations

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
ALIGNMENT_COLUMNS = ["experiment", "dataset", "model", "topology", "nodes", "batch_size", "lr", "estimator", "hop",
                     "n_units", "pearson", "spearman", "sign_agreement", "spearman_ci_low", "spearman_ci_high",
                     "init", "partition", "epochs", "unit_rounds", "horizon_kind", "seeds", "n_runs"]
METRICS = ["pearson", "spearman", "sign_agreement", "spearman_ci_low", "spearman_ci_high"]


def snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run Snakemake on the repository's workflow inside ``workdir`` (so the repo's results/ stay untouched)."""
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
                           *args], capture_output=True, text=True, env=env, timeout=timeout)


def planned_jobs(workdir: Path, *args: str) -> tuple[Counter, str]:
    """Job counts per rule of a dry-run, and its output (which lists every job's wildcards)."""
    proc = snakemake(workdir, "--dry-run", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = Counter()
    for line in proc.stdout.split("Job stats:", 1)[1].splitlines():
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if match and match[1] != "total":
            counts[match[1]] = int(match[2])
        if line.startswith("total"):
            break
    return counts, proc.stdout


def expected_jobs(workdir: Path, configfile: str, monkeypatch) -> Counter:
    """Job counts per rule that the config asks for: three per run, one data file per dataset, one compare, one figures,
    one job per application and one app_figures if there are any."""
    monkeypatch.chdir(workdir)
    pipe = load_pipeline(yaml.safe_load((workdir / configfile).read_text()))
    n = len(pipe.runs)
    apps = Counter(dict.fromkeys(pipe.applications, 1)) + Counter({"app_figures": 1 if pipe.applications else 0})
    return Counter({"prepare_data": len(pipe.datasets()), "train": n, "groundtruth": n, "estimate": n,
                    "compare": 1, "figures": 1, "all": 1}) + apps


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A working directory like a user's checkout: the config folder, no results yet."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path


# ----------------------------------------------------------------------------- config → runs


def test_default_config_covers_the_experiments(monkeypatch):
    monkeypatch.chdir(REPO)
    pipe = load_pipeline(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    by_experiment = Counter(s.experiment for s in pipe.runs.values())
    assert {"alignment", "sensitivity", "cascade", "rhop"} <= set(by_experiment)
    alignment = [s for s in pipe.runs.values() if s.experiment == "alignment"]
    assert {(s.model, s.topology) for s in alignment} == {(m, t) for m in ("mlp", "cnn")
                                                           for t in ("ring", "grid", "exponential")}
    assert {s.seed for s in alignment} >= {222, 223} and {s.nodes for s in alignment} == {16}
    sweep = [s for s in pipe.runs.values() if s.experiment == "sensitivity"]
    for axis in ("batch_size", "lr", "nodes", "init", "unit_rounds"):
        assert len({str(getattr(s, axis)) for s in sweep}) >= 2, axis
    assert "hub16" in {s.topology for s in pipe.runs.values() if s.experiment == "cascade"}
    assert max(s.horizon for s in pipe.runs.values() if s.experiment == "rhop") >= 3
    assert pipe.figures["ablations"] and all(e.startswith("ablation-") for e in pipe.figures["ablations"])
    assert all(re.fullmatch(r"[A-Za-z0-9._+~=/-]+", run) for run in pipe.runs)


def test_schema_mirrors_run_settings():
    from dice_repro.settings import CHOICES, ESTIMATORS, RunSettings

    schema = yaml.safe_load(SCHEMA.read_text())["$defs"]
    props = schema["settings"]["properties"]
    assert set(schema["setting_names"]["enum"]) == {f.name for f in fields(RunSettings)} - {"experiment", "seed"}
    for key, allowed in CHOICES.items():
        assert tuple(props[key]["enum"]) == allowed, key
    assert tuple(props["estimators"]["items"]["enum"]) == ESTIMATORS


def bad(path: str, value):
    """A copy of the default config with one key (a/b/c path) set to ``value`` (None: removed)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    *parents, last = path.split("/")
    node = cfg
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return cfg


@pytest.mark.parametrize("cfg, message, where", [
    (bad("defaults/topology", "ringg"), "'ringg' is not one of ['ring', 'exponential', 'grid'", "['defaults']['topology']"),
    (bad("defaults/topolgy", "ring"), "'topolgy' is not one of ['dataset', 'data_dir'", "['defaults']"),
    (bad("wandb/mode", "sometimes"), "'sometimes' is not one of ['offline', 'online', 'disabled']", "['wandb']['mode']"),
    (bad("experiments/alignment/grid/model", ["mlp", "transformer"]),
     "'transformer' is not one of ['logreg', 'mlp', 'cnn', 'resnet18_micro']", "['grid']['model'][1]"),
    (bad("experiments/sensitivity/grid/0/lr", [0.1, -1]), "-1 is less than or equal to the minimum of 0", "['lr'][1]"),
    (bad("experiments/alignment/figures", ["pie"]), "'pie' is not one of ['alignment', 'validity_map'", "['figures'][0]"),
    (bad("defaults/unit_rounds", "middle"), "'middle' is not one of ['all', 'first_epoch', 'last_epoch']",
     "['defaults']['unit_rounds']"),
    (bad("experiments/alignment/grid/seed", [1]), "'seed' is not one of ['dataset'", "['alignment']['grid']"),
    (bad("experiments", None), "'experiments' is a required property", "On instance"),
    (bad("applications/anomaly/options/corruption", ["random_labels"]),
     "'corruption' is not one of ['corruptions', 'batch_sizes', 'lrs', 'bootstrap']", "['applications']['anomaly']['options']"),
    (bad("applications/contribution/options/keep", 2),
     "'keep' is not one of ['bad_fraction', 'bad_kind', 'estimators', 'bootstrap']", "['contribution']['options']"),
    (bad("applications/collaborators/options/bad_kind", "gaussian_noise"), "'gaussian_noise' does not match",
     "['collaborators']['options']['bad_kind']"),
    (bad("applications/outlier", {}), "'outlier' is not one of ['anomaly', 'collaborators', 'contribution']",
     "['applications']"),
])
def test_schema_rejects_bad_configs(cfg, message, where):
    with pytest.raises(WorkflowError) as err:
        validate(cfg, str(SCHEMA))
    assert message in str(err.value) and where in str(err.value)


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "smoke.yaml", "paper.yaml"):
        validate(yaml.safe_load((REPO / "config" / name).read_text()), str(SCHEMA))


def test_bad_combinations_fail_with_the_run_named(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    cfg = yaml.safe_load((workdir / "config" / "smoke.yaml").read_text())
    too_far = copy.deepcopy(cfg)
    too_far["experiments"]["cascade"]["settings"]["horizon"] = 50
    with pytest.raises(ConfigError, match=r"experiment 'cascade', run cascade/seed~0: horizon=50 must be below"):
        load_pipeline(too_far)
    too_big = copy.deepcopy(cfg)
    too_big["experiments"]["alignment"]["settings"] = {"batch_size": 128}
    with pytest.raises(ConfigError, match="batch_size=128 exceeds samples_per_node=64"):
        load_pipeline(too_big)
    table = workdir / "config" / "ablations.tsv"
    table.write_text(table.read_text() + "baseline\tiid\tfirst\tper_node\tone_hop\n")
    with pytest.raises(ConfigError, match=r"ablation names \['baseline'\] appear more than once"):
        load_pipeline(cfg)
    table.write_text("name\ttopolgy\nx\tring\n")
    with pytest.raises(ConfigError, match=r"row 1 \(x\).*unknown setting\(s\) 'topolgy'; allowed keys:"):
        load_pipeline(cfg)


def test_applications_config():
    pipe = load_pipeline(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    assert set(pipe.applications) == set(APP_TABLES) == set(APP_FIGURES)
    anomaly = pipe.applications["anomaly"]
    assert anomaly.settings.experiment == "apps_anomaly" and anomaly.settings.topology == "exponential"
    assert anomaly.settings.dataset in pipe.datasets()
    assert pipe.applications["collaborators"].seeds == [222, 223]
    assert option_flags({"corruptions": ["label_permutation", "gaussian_noise:100"], "keep": 2, "lrs": [0.1],
                         "bad_fraction": 0.25}) == \
        "--corruptions label_permutation gaussian_noise:100 --keep 2 --lrs 0.1 --bad-fraction 0.25"
    assert anomaly.flags().startswith(f"--bootstrap {pipe.bootstrap} --corruptions")  # compare.bootstrap by default
    from dice_repro.apps.figures import FIGURES

    assert {kind: FIGURES[kind][0][:-4] for kinds in APP_FIGURES.values() for kind in kinds} == \
        {kind: FIGURES[kind][0][:-4] for kind in FIGURES}
    assert all(FIGURES[kind][0][:-4] in APP_TABLES[app] for app, kinds in APP_FIGURES.items() for kind in kinds)
    # settings are checked like a run's, the application named; no applications: no jobs, no figures
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["applications"]["anomaly"]["options"]["batch_sizes"] = [16, 500]
    with pytest.raises(ConfigError, match=r"application 'anomaly', batch_sizes 500: batch_size=500 exceeds"):
        load_pipeline(cfg)
    del cfg["applications"]
    assert load_pipeline(cfg).applications == {} and load_pipeline(cfg).app_figures() == []


def test_ablation_cells(tmp_path):
    path = tmp_path / "a.tsv"
    path.write_text("name\tlr\testimators\tunit_rounds\tinit\n"
                    "x\t1e-2\tone_hop\t1+3\t\n"
                    "y\t0.5\tone_hop+propagation\tlast_epoch\tcommon\n")
    assert list(read_ablations(path)["name"]) == ["x", "y"]
    runs = load_pipeline({"defaults": {"dataset": "digits", "samples_per_node": 64, "batch_size": 16},
                          "experiments": {}, "ablations": {"table": str(path)}}).runs
    x, y = runs.values()
    assert (x.lr, x.estimators, x.unit_rounds, x.init) == (0.01, ("one_hop",), [1, 3], "per_node")
    assert (y.lr, y.estimators, y.unit_rounds, y.init) == (0.5, ("one_hop", "propagation"), "last_epoch", "common")
    assert x.experiment == "ablation-x" and list(runs)[0].startswith("ablation/name~x_lr~1e-2_")


# ------------------------------------------------------------------------------------ dry-runs


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/smoke.yaml", "config/paper.yaml"])
def test_dry_run_plans_three_jobs_per_run(workdir, configfile, monkeypatch):
    assert planned_jobs(workdir, "--configfile", configfile)[0] == expected_jobs(workdir, configfile, monkeypatch)


def test_a_fresh_clone_with_committed_figures_still_runs_everything(workdir, monkeypatch):
    """figures/ is committed for the README; the main job must recompute all the same, not say 'nothing to do'."""
    shutil.copytree(REPO / "figures", workdir / "figures")
    assert planned_jobs(workdir)[0] == expected_jobs(workdir, "config/config.yaml", monkeypatch)


def test_adding_an_ablation_row_adds_its_jobs(workdir, monkeypatch):
    before, _ = planned_jobs(workdir)
    table = workdir / "config" / "ablations.tsv"
    table.write_text(table.read_text() + "common_init\tiid\tfirst\tcommon\tone_hop+propagation\n")
    after, out = planned_jobs(workdir)
    seeds = len(yaml.safe_load((workdir / "config" / "config.yaml").read_text())["ablations"].get("seeds", [222]))
    assert after - before == Counter({"train": seeds, "groundtruth": seeds, "estimate": seeds})
    assert after == expected_jobs(workdir, "config/config.yaml", monkeypatch)
    assert "run=ablation/name~common_init_partition~iid_probe~first_init~common_" in out


def test_bad_config_fails_before_any_job(workdir):
    (workdir / "config" / "config.yaml").write_text(
        (workdir / "config" / "config.yaml").read_text().replace("topology: ring", "topology: ringg", 1))
    proc = snakemake(workdir, "--cores", "1")
    assert proc.returncode != 0
    assert "'ringg' is not one of ['ring'" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_lint_is_clean(workdir):
    proc = snakemake(workdir, "--lint")
    assert proc.returncode == 0 and "Congratulations, your workflow is in a good condition!" in proc.stdout + proc.stderr


def test_slurm_profile_is_an_example_for_the_slurm_executor():
    profile = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm" and "default-resources" in profile


# --------------------------------------------------------------------------- comparison tables


def test_alignment_table(synthetic_tables):
    table = pd.read_csv(synthetic_tables / "alignment.csv", dtype={"hop": str})
    assert set(ALIGNMENT_COLUMNS) <= set(table.columns)
    assert np.isfinite(table[METRICS].to_numpy()).all()
    assert (table["spearman_ci_low"] <= table["spearman"] + 1e-9).all()
    assert (table["spearman"] <= table["spearman_ci_high"] + 1e-9).all()
    one_hop = table[table["estimator"] == "one_hop"]
    assert set(one_hop["r"].dropna()) == {1} and (one_hop["spearman"] > 0.9).all()
    cascade = table[table["experiment"] == "cascade"]
    prop = cascade[(cascade["estimator"] == "propagation") & (cascade["horizon_kind"] == "window")]
    assert sorted(prop.loc[prop["hop"] == "all", "r"].unique()) == [1, 2, 3]
    assert sorted(prop.loc[prop["hop"] != "all", "hop"].unique()) == ["0", "1", "2", "3"]
    assert (cascade.loc[cascade["estimator"] == "printed_sign", "spearman"] < -0.9).all()
    end = cascade[cascade["horizon_kind"] == "end"]
    assert set(end["estimator"]) == {"propagation"} and (end["hop"] == "all").all()
    # two seeds pooled: 16 nodes × 1 round × 2 seeds (per hop: the sources with nodes at that distance)
    assert set(cascade.loc[cascade["hop"] == "all", "n_units"]) == {32} and set(cascade["seeds"]) == {"1+2"}
    # the ablation runs stop at their own horizon
    assert table.loc[table["experiment"].str.startswith("ablation-"), "r"].max() == 2


def test_cascade_and_points_tables(synthetic_tables):
    cascade = pd.read_csv(synthetic_tables / "cascade.csv")
    nodes = cascade[(cascade["level"] == "node") & (cascade["experiment"] == "cascade")]
    assert set(nodes["hop"]) == {0, 1, 2, 3} and nodes["node"].notna().all()
    truth = nodes[nodes["estimator"] == "groundtruth"].groupby("hop")["abs_value"].mean()
    assert truth.is_monotonic_decreasing  # the synthetic cascade decays with distance
    assert cascade.loc[cascade["level"] == "hop", "node"].isna().all()
    points = pd.read_csv(synthetic_tables / "points.csv", dtype={"hop": str})
    assert (points["hop"] == "all").all() and np.isfinite(points[["estimate", "groundtruth"]].to_numpy()).all()
    assert points.groupby(["experiment", "group", "estimator", "horizon_kind", "r"]).size().max() <= 300


# --------------------------------------------------------------------------------- end to end


def wandb_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "wandb" in p.name.lower()]


@pytest.mark.slow
def test_smoke_run_end_to_end(workdir):
    home = workdir / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(home)}
    smoke = ("--configfile", "config/smoke.yaml")
    proc = snakemake(workdir, *smoke, "--cores", "2", env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    tables = workdir / "results" / "tables"
    alignment = pd.read_csv(tables / "alignment.csv", dtype={"hop": str})
    assert set(ALIGNMENT_COLUMNS) <= set(alignment.columns)
    assert np.isfinite(alignment[METRICS].to_numpy()).all() and (alignment["n_units"] > 0).all()
    cascade = pd.read_csv(tables / "cascade.csv")
    assert np.isfinite(cascade[["value", "abs_value"]].to_numpy()).all()

    plan = load_pipeline(yaml.safe_load((workdir / "config" / "smoke.yaml").read_text()) |
                         {"ablations": {"table": str(workdir / "config" / "ablations.tsv")}})
    for kind in [*plan.figures, *plan.app_figures()]:
        for ext in ("png", "pdf"):
            assert (workdir / "figures" / f"{kind}.{ext}").stat().st_size > 0

    # the application tables: every number finite, the expected rows
    assert set(plan.applications) == {"anomaly", "collaborators", "contribution"}
    for app in plan.applications:
        for name in APP_TABLES[app]:
            table = pd.read_csv(tables / f"{name}.csv")
            assert len(table) > 0 and np.isfinite(table.select_dtypes("number").to_numpy(float)).all(), name
    anomaly = pd.read_csv(tables / "anomaly.csv")
    assert {"proximal", "update_norm"} <= set(anomaly["scorer"]) and anomaly["auc"].between(0, 1).all()
    assert set(pd.read_csv(tables / "collaborators.csv")["policy"]) == {"all", "dice", "random"}
    assert set(pd.read_csv(tables / "contribution.csv")["estimator"]) == {"one_hop", "propagation"}

    runs = list((workdir / "results" / "wandb" / "wandb").glob("offline-run-*"))
    # train, groundtruth, estimate per run; compare; figures; one per application; app_figures
    assert len(runs) == 3 * len(plan.runs) + 2 + len(plan.applications) + 1
    assert not wandb_files(home), "W&B wrote into $HOME"

    again = snakemake(workdir, *smoke, "--cores", "2", env=env)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    report = workdir / "report.html"
    proc = snakemake(workdir, *smoke, "--report", str(report), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert report.stat().st_size > 100_000 and not wandb_files(home)

    # a run interrupted before one estimate job (and so before compare and figures) resumes where it stopped
    some_run = next(iter(plan.runs))
    (workdir / "results" / "runs" / some_run / "estimates.csv").unlink()
    shutil.rmtree(workdir / "results" / "tables")
    shutil.rmtree(workdir / "figures")
    assert planned_jobs(workdir, *smoke)[0] == Counter({"estimate": 1, "compare": 1, "figures": 1, "anomaly": 1,
                                                        "collaborators": 1, "contribution": 1, "app_figures": 1,
                                                        "all": 1})
