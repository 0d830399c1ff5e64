"""Every figure, drawn from the comparison tables only (never from W&B, never by re-running training).

One function per figure kind; each takes the tables and the experiments to draw and returns a
matplotlib ``Figure``, or raises ``NoData`` when the tables hold none of its rows.
``make_figures`` writes each as PNG and PDF and logs the PNGs to one W&B run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dice_repro.compare import GROUNDTRUTH
from dice_repro.workflow_config import ABLATION_PREFIX

#: Estimators on another scale than the influence itself (ranks still comparable, magnitudes not).
OFF_SCALE = ("printed_sign", "cosine", "proximal", "own_term")
#: The multi-hop estimate shown next to the ground truth on the cascade figures, first present wins.
CASCADE_ESTIMATE = ("propagation", "second_order", "path_sum", "no_curvature", "one_hop")
PANEL = 3.2  # inches per panel side
RHO_FLOOR = 1e-4  # 1 − ρ below this is drawn at this level (ρ ≥ 0.9999)
LOG_DECADES = 3  # cascade nodes: sizes span this many decades of |influence|


class NoData(LookupError):
    """The tables hold no rows a figure needs."""


@dataclass
class Tables:
    """The three comparison tables written by ``dice_repro.compare``."""

    alignment: pd.DataFrame
    cascade: pd.DataFrame
    points: pd.DataFrame

    @classmethod
    def read(cls, tables_dir: str | Path) -> "Tables":
        """Read the tables; a missing table reads as empty (its figures are then skipped)."""
        def read(name: str, hop: type) -> pd.DataFrame:
            path = Path(tables_dir) / f"{name}.csv"
            return pd.read_csv(path, dtype={"hop": hop, "group": str}) if path.exists() else pd.DataFrame()
        return cls(read("alignment", str), read("cascade", int), read("points", str))

    def experiments(self) -> list[str]:
        """Every experiment named in any table, in first-seen order."""
        names = [f["experiment"] for f in (self.alignment, self.cascade, self.points) if "experiment" in f]
        return list(dict.fromkeys(pd.concat(names).tolist())) if names else []


def _select(frame: pd.DataFrame, experiments: list[str], what: str, **equal) -> pd.DataFrame:
    """Rows of ``experiments`` whose columns equal the given values; ``NoData`` when none."""
    if frame.empty:
        raise NoData(f"no {what} rows (table missing or empty)")
    mask = frame["experiment"].isin(experiments)
    for col, value in equal.items():
        mask &= frame[col] == value
    rows = frame[mask]
    if rows.empty:
        raise NoData(f"no {what} rows for experiments {experiments}")
    order = {e: i for i, e in enumerate(experiments)}
    return rows.sort_values("experiment", key=lambda s: s.map(order), kind="stable")


def _grid(n: int, ncols: int, width: float = PANEL, height: float = PANEL) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with ``n`` panels in rows of ``ncols``; unused panels hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _estimators(names: pd.Series) -> list[str]:
    """Estimator names in a stable order: one-hop first, the rest alphabetically."""
    return sorted(set(names), key=lambda e: (e != "one_hop", e))


def _stats_text(row: pd.Series) -> str:
    """The agreement numbers of one alignment row, as printed on a scatter panel."""
    return (f"Pearson {row['pearson']:.3f}\nSpearman {row['spearman']:.3f} "
            f"[{row['spearman_ci_low']:.3f}, {row['spearman_ci_high']:.3f}]\n"
            f"sign agreement {row['sign_agreement']:.0%}\nn = {int(row['n_units'])}")


def plot_alignment(t: Tables, experiments: list[str]) -> Figure:
    """E1 in the paper's style: one-hop DICE-E (x) against DICE-GT (y), one point per unit, numbers on the axes."""
    pts = _select(t.points, experiments, "one-hop points", estimator="one_hop", horizon_kind="window", r=1)
    stats = _select(t.alignment, experiments, "one-hop alignment", estimator="one_hop", horizon_kind="window",
                    r=1, hop="all").set_index(["experiment", "group"])
    panels = pts[["experiment", "group", "model", "topology"]].drop_duplicates()
    named = ~panels.duplicated(["experiment", "model", "topology"], keep=False)  # else the group label says it
    fig, axes = _grid(len(panels), int(panels.groupby("experiment")["topology"].nunique().max()))
    for ax, (i, p) in zip(axes, panels.iterrows()):
        rows = pts[(pts["experiment"] == p["experiment"]) & (pts["group"] == p["group"])]
        for seed, by_seed in rows.groupby("seed"):
            ax.scatter(by_seed["estimate"], by_seed[GROUNDTRUTH], s=14, alpha=0.75, label=f"seed {seed}")
        lim = np.abs(rows[["estimate", GROUNDTRUTH]].to_numpy()).max() * 1.05
        ax.plot([-lim, lim], [-lim, lim], ls="--", lw=0.8, color="0.5")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.ticklabel_format(style="sci", scilimits=(-2, 2))
        ax.text(0.03, 0.97, _stats_text(stats.loc[(p["experiment"], p["group"])]), transform=ax.transAxes,
                va="top", fontsize=7, bbox={"boxstyle": "round", "fc": "white", "alpha": 0.85})
        title = f"{p['model']} · {p['topology']}" if named[i] else p["group"]
        ax.set_title(title + (f" ({p['experiment']})" if len(experiments) > 1 else ""), fontsize=9)
        ax.set_xlabel("one-hop DICE-E")
        ax.set_ylabel("one-hop DICE-GT")
        ax.legend(fontsize=6, loc="lower right")
    return fig


def plot_validity_map(t: Tables, experiments: list[str]) -> Figure:
    """E2: Spearman of DICE-E^(1) vs DICE-GT^(1) over batch size × η, faceted by init and phase, plus node count."""
    import seaborn as sns

    rows = _select(t.alignment, experiments, "r = 1 alignment", horizon_kind="window", r=1, hop="all")
    base_nodes, base_samples = rows["nodes"].mode().iloc[0], rows["samples_per_node"].mode().iloc[0]
    heat = rows[(rows["nodes"] == base_nodes) & (rows["samples_per_node"] == base_samples)]
    facets = heat[["init", "unit_rounds"]].drop_duplicates().sort_values(["init", "unit_rounds"]).values.tolist()
    axes_keys = ["experiment", "estimator", "batch_size", "lr", "init", "unit_rounds", "samples_per_node"]
    by_nodes = rows.groupby(axes_keys).filter(lambda g: g["nodes"].nunique() > 1)
    estimators = _estimators(rows["estimator"])
    lines = [(e, est) for e in experiments for est in estimators if ((heat["experiment"] == e) & (heat["estimator"] == est)).any()]
    ncols = len(facets) + (1 if not by_nodes.empty else 0)
    fig = Figure(figsize=(PANEL * ncols, 0.9 * PANEL * len(lines)), layout="constrained")
    axes = fig.subplots(len(lines), ncols, squeeze=False)
    for i, (experiment, est) in enumerate(lines):
        mine = heat[(heat["experiment"] == experiment) & (heat["estimator"] == est)]
        for j, (init, phase) in enumerate(facets):
            ax = axes[i, j]
            cell = mine[(mine["init"] == init) & (mine["unit_rounds"] == phase)]
            grid = cell.pivot_table(index="batch_size", columns="lr", values="spearman", aggfunc="mean")
            if grid.empty:
                ax.set_visible(False)
                continue
            sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="RdYlGn", annot=True, fmt=".3f", cbar=j == len(facets) - 1,
                        cbar_kws={"label": "Spearman"}, annot_kws={"fontsize": 8}, linewidths=0.5)
            ax.set_title(f"{est}: init={init}, phase={phase}", fontsize=8)
            ax.set_xlabel("η (lr)")
            ax.set_ylabel("batch size")
        if not by_nodes.empty:
            ax = axes[i, -1]
            sub = by_nodes[(by_nodes["experiment"] == experiment) & (by_nodes["estimator"] == est)]
            if sub.empty:
                ax.set_visible(False)
                continue
            for (bs, lr, init, phase, samples), line in sub.groupby(axes_keys[2:]):
                line = line.sort_values("nodes")
                _rho_points(ax, line["nodes"], line, label=f"B={bs}, η={lr}, {samples} samples/node, {init}, {phase}")
            _rho_axis(ax)
            ax.set_xticks(sorted(sub["nodes"].unique()))
            ax.set_title(f"{est}: node count", fontsize=8)
            ax.set_xlabel("nodes")
            ax.legend(fontsize=6, loc="lower left")
    fig.suptitle(f"Where DICE-E$^{{(1)}}$ holds: Spearman with DICE-GT$^{{(1)}}$ ({base_nodes} nodes × {base_samples} samples)",
                 fontsize=10)
    return fig


def _cascade_estimate(rows: pd.DataFrame) -> str | None:
    present = set(rows["estimator"])
    return next((e for e in CASCADE_ESTIMATE if e in present), None)


def _dominant_source(rows: pd.DataFrame, top) -> int:
    """Among the attributed sources, the node that sends the most weight (column sum of W): it spreads most."""
    sources = sorted(rows["source"].unique())
    weight = top.union().sum(axis=0)
    return int(max(sources, key=lambda j: (weight[j], -j)))


def _log_magnitude(values: np.ndarray) -> np.ndarray:
    """Signed log-magnitude over ``LOG_DECADES`` decades below the largest |value| (0 below that, or where 0)."""
    peak = np.abs(values).max()
    if peak == 0:
        return values
    decades = np.log10(np.maximum(np.abs(values), peak * 10.0 ** -LOG_DECADES) / peak) + LOG_DECADES
    return np.sign(values) * decades


def plot_cascade_graph(t: Tables, experiments: list[str]) -> Figure:
    """E4 like the paper's Fig. 1: one batch's influence at every node on the drawn graph.

    Node size grows with log |mean influence| over ``LOG_DECADES`` decades (a cascade spans several);
    colour is its sign (blue: the batch lowered that node's probe loss).
    """
    from dice_repro.topology import draw, make_topology

    rows = _select(t.cascade, experiments, "node-level cascade", level="node")
    groups = rows[["experiment", "group", "topology", "nodes", "topology_file", "seeds"]].drop_duplicates(["experiment", "group"])
    fig, axes = _grid(2 * len(groups), 2, width=3.6, height=3.6)
    for k, (_, g) in enumerate(groups.iterrows()):
        mine = rows[(rows["experiment"] == g["experiment"]) & (rows["group"] == g["group"])]
        top = make_topology(g["topology"], int(g["nodes"]), seed=int(str(g["seeds"]).split("+")[0]),
                            path=None if pd.isna(g["topology_file"]) else g["topology_file"])
        source = _dominant_source(mine, top)
        for ax, est in zip(axes[2 * k: 2 * k + 2], (GROUNDTRUTH, _cascade_estimate(mine))):
            cell = mine[(mine["source"] == source) & (mine["estimator"] == est)]
            values = np.zeros(top.n)
            values[cell["node"].astype(int)] = cell["value"]
            draw(top, None, node_values=_log_magnitude(values), ax=ax)
            name = "DICE-GT" if est == GROUNDTRUTH else f"DICE-E ({est})"
            ax.set_title(f"{g['topology']}: {name}, batch of node {source}\n"
                         f"reached nodes up to hop {int(cell['hop'].max())}", fontsize=8)
    return fig


def plot_cascade_hops(t: Tables, experiments: list[str]) -> Figure:
    """E4: mean |influence| of a batch at each node against its hop distance from the source (log scale)."""
    rows = _select(t.cascade, experiments, "node-level cascade", level="node")
    rows = rows[~rows["estimator"].isin(OFF_SCALE)]
    groups = rows[["experiment", "group", "topology"]].drop_duplicates()
    fig, axes = _grid(len(groups), 3)
    for ax, (_, g) in zip(axes, groups.iterrows()):
        mine = rows[(rows["experiment"] == g["experiment"]) & (rows["group"] == g["group"])]
        truth = mine[mine["estimator"] == GROUNDTRUTH]
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(truth))
        ax.scatter(truth["hop"] + jitter, truth["abs_value"], s=6, alpha=0.3, color="0.4", label="nodes (DICE-GT)")
        for est in [GROUNDTRUTH] + [e for e in _estimators(mine["estimator"]) if e != GROUNDTRUTH]:
            curve = mine[mine["estimator"] == est].groupby("hop")["abs_value"].mean()
            ax.plot(curve.index, curve.values, marker="o", ms=4, lw=2.2 if est == GROUNDTRUTH else 1.2,
                    ls="-" if est == GROUNDTRUTH else "--", label="DICE-GT" if est == GROUNDTRUTH else est)
        ax.set_yscale("log")
        ax.set_xticks(sorted(mine["hop"].unique()))
        ax.set_xlabel("hop distance from the source")
        ax.set_ylabel("mean |influence| at first arrival")
        ax.set_title(g["group"] if g["group"] != g["experiment"] else g["topology"], fontsize=9)
        ax.legend(fontsize=6)
    return fig


def _rho_axis(ax) -> None:
    """A Spearman axis that resolves near-perfect agreement: log scale of 1 − ρ, labelled in ρ, best at the top."""
    ax.set_yscale("log")
    ax.set_ylim(2.6, RHO_FLOOR / 2)
    ticks = [RHO_FLOOR, 1e-3, 1e-2, 1e-1, 1.0, 2.0]
    ax.set_yticks(ticks, [f"{1 - t:g}".replace("-", "−") for t in ticks])
    ax.minorticks_off()
    ax.set_ylabel("Spearman ρ with DICE-GT\n(log scale of 1 − ρ)")


def _rho_points(ax, x, rows: pd.DataFrame, **kwargs) -> None:
    """Spearman of ``rows`` at positions ``x`` on a ``_rho_axis``, with their bootstrap intervals."""
    y = np.clip(1 - rows["spearman"].to_numpy(), RHO_FLOOR, None)
    low = np.clip(1 - rows["spearman_ci_high"].to_numpy(), RHO_FLOOR, None)
    high = np.clip(1 - rows["spearman_ci_low"].to_numpy(), RHO_FLOOR, None)
    ax.errorbar(x, y, yerr=[y - low, high - y], marker="o", ms=4, capsize=3, **kwargs)


def _rho_lines(ax, rows: pd.DataFrame, x: str) -> None:
    """Spearman against ``x``, one line per estimator, slightly dodged so that equal values stay visible."""
    estimators = _estimators(rows["estimator"])
    for i, est in enumerate(estimators):
        sub = rows[rows["estimator"] == est].sort_values(x)
        _rho_points(ax, sub[x] + 0.06 * (i - (len(estimators) - 1) / 2), sub, label=est)
    _rho_axis(ax)
    ax.set_xticks(sorted(rows[x].unique()))


def plot_rhop(t: Tables, experiments: list[str]) -> Figure:
    """E5: r-hop DICE-E vs DICE-GT — Spearman against the radius r (top) and per hop distance (bottom)."""
    rows = _select(t.alignment, experiments, "window alignment", horizon_kind="window")
    groups = rows[["experiment", "group"]].drop_duplicates().values.tolist()
    fig = Figure(figsize=(PANEL * len(groups), 2 * PANEL), layout="constrained")
    axes = fig.subplots(2, len(groups), squeeze=False)
    for j, (experiment, group) in enumerate(groups):
        mine = rows[(rows["experiment"] == experiment) & (rows["group"] == group)]
        _rho_lines(axes[0, j], mine[mine["hop"] == "all"], "r")
        axes[0, j].set_xlabel("radius r")
        axes[0, j].set_title(f"{group}: DICE-E$^{{(r)}}$ vs DICE-GT$^{{(r)}}$", fontsize=8)
        per_hop = mine[mine["hop"] != "all"].assign(hop=lambda d: d["hop"].astype(int))
        _rho_lines(axes[1, j], per_hop, "hop")
        axes[1, j].set_xlabel("hop distance s")
        axes[1, j].set_title(f"{group}: influence arriving at hop s", fontsize=8)
    axes[0, 0].legend(fontsize=6, loc="center left")
    return fig


def plot_ablations(t: Tables, experiments: list[str]) -> Figure:
    """Ablation variants side by side: Spearman (with bootstrap interval) per estimator at r = 1 and the largest r."""
    rows = _select(t.alignment, experiments, "ablation alignment", horizon_kind="window", hop="all")
    rows = rows.assign(variant=rows["experiment"].str.removeprefix(ABLATION_PREFIX))
    radii = sorted({1, int(rows["r"].max())})
    estimators = _estimators(rows["estimator"])
    variants = list(dict.fromkeys(rows["variant"]))
    fig, axes = _grid(len(radii), 2, width=max(PANEL, 0.6 * len(variants) + 1.5))
    for ax, r in zip(axes, radii):
        at_r = rows[rows["r"] == r]
        for i, est in enumerate(estimators):
            sub = at_r[at_r["estimator"] == est]
            x = sub["variant"].map({v: k for k, v in enumerate(variants)}) + 0.12 * (i - (len(estimators) - 1) / 2)
            _rho_points(ax, x, sub, ls="none", label=est)
        _rho_axis(ax)
        ax.set_xticks(np.arange(len(variants)), variants, rotation=30, ha="right")
        ax.set_title(f"ablations at r = {r}", fontsize=9)
        ax.legend(fontsize=6)
    return fig


FIGURES: dict[str, Callable[[Tables, list[str]], Figure]] = {
    "alignment": plot_alignment,
    "validity_map": plot_validity_map,
    "cascade_graph": plot_cascade_graph,
    "cascade_hops": plot_cascade_hops,
    "rhop": plot_rhop,
    "ablations": plot_ablations,
}


def _default_plan(t: Tables) -> dict[str, list[str]]:
    """Without a plan: every figure over every experiment (ablation variants only in the ablation figure)."""
    names = t.experiments()
    plain = [e for e in names if not e.startswith(ABLATION_PREFIX)]
    variants = [e for e in names if e.startswith(ABLATION_PREFIX)]
    return {kind: variants if kind == "ablations" else plain for kind in FIGURES}


def make_figures(
    tables_dir: str | Path,
    out_dir: str | Path,
    wandb_dir: str | Path = "results/wandb",
    wandb_mode: str | None = None,
    plan: dict[str, list[str]] | None = None,
) -> list[Path]:
    """Draw the figures of ``plan`` (figure kind → experiments; default: all the tables support) as PNG and PDF.

    Without a plan a figure whose rows are absent is skipped with a note; with a plan it is an error.
    """
    import seaborn as sns

    from dice_repro.tracking import tracked_run

    tables = Tables.read(tables_dir)
    chosen = plan if plan is not None else _default_plan(tables)
    unknown = sorted(set(chosen) - set(FIGURES))
    if unknown:
        raise ValueError(f"unknown figure kind(s) {unknown}; choose from {', '.join(FIGURES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        for kind, experiments in chosen.items():
            try:
                fig = FIGURES[kind](tables, list(experiments))
            except NoData as exc:
                if plan is not None:
                    raise ValueError(f"figure {kind!r} cannot be drawn: {exc}") from None
                print(f"note: skipping figure {kind!r}: {exc}")
                continue
            for suffix in ("png", "pdf"):
                fig.savefig(out / f"{kind}.{suffix}", dpi=150)
            written.append(out / f"{kind}.png")
    with tracked_run("figures", {"tables_dir": str(tables_dir), "plan": chosen}, "figures", "figures/all",
                     wandb_dir, wandb_mode) as tracker:
        for path in written:
            tracker.image(path.stem, path)
        tracker.summary({"figures": len(written)})
    print(json.dumps({"figures": [p.name for p in written]}), "->", out)
    return written
