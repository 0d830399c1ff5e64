"""Every figure is drawn from the comparison tables alone (synthetic fields, no training)."""

from __future__ import annotations

import pytest

from dice_repro import plots
from dice_repro.workflow_config import ABLATION_PREFIX

PLAN = {
    "alignment": ["alignment"],
    "validity_map": ["sensitivity"],
    "cascade_graph": ["cascade"],
    "cascade_hops": ["cascade"],
    "rhop": ["cascade"],
    "ablations": [ABLATION_PREFIX + "baseline", ABLATION_PREFIX + "small_lr"],
}


@pytest.fixture(autouse=True)
def no_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")


def test_every_figure_from_a_plan(synthetic_tables, tmp_path):
    written = plots.make_figures(synthetic_tables, tmp_path, plan=PLAN)
    assert sorted(p.name for p in written) == sorted(f"{kind}.png" for kind in PLAN)
    for kind in PLAN:
        assert (tmp_path / f"{kind}.png").stat().st_size > 10_000
        assert (tmp_path / f"{kind}.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("kind", list(plots.FIGURES))
def test_each_figure_function_returns_a_figure(synthetic_tables, kind):
    fig = plots.FIGURES[kind](plots.Tables.read(synthetic_tables), PLAN[kind])
    assert fig.axes and any(ax.has_data() for ax in fig.axes)


def test_alignment_panels_carry_the_numbers(synthetic_tables):
    fig = plots.plot_alignment(plots.Tables.read(synthetic_tables), ["alignment"])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(texts) == 4  # mlp/cnn × ring/exponential
    assert all("Spearman" in t and "Pearson" in t and "sign agreement" in t for t in texts)


def test_without_plan_draws_what_the_tables_support(synthetic_tables, tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "alignment.csv").write_bytes((synthetic_tables / "alignment.csv").read_bytes())
    (tmp_path / "tables" / "points.csv").write_bytes((synthetic_tables / "points.csv").read_bytes())
    written = plots.make_figures(tmp_path / "tables", tmp_path / "figures")
    out = capsys.readouterr().out
    assert "skipping figure 'cascade_graph'" in out and "skipping figure 'cascade_hops'" in out
    assert {p.stem for p in written} >= {"alignment", "validity_map", "rhop", "ablations"}


def test_a_planned_figure_without_rows_is_an_error(synthetic_tables, tmp_path):
    with pytest.raises(ValueError, match="figure 'rhop' cannot be drawn: no window alignment rows"):
        plots.make_figures(synthetic_tables, tmp_path, plan={"rhop": ["no_such_experiment"]})
    with pytest.raises(ValueError, match="unknown figure kind"):
        plots.make_figures(synthetic_tables, tmp_path, plan={"pie_chart": ["alignment"]})
