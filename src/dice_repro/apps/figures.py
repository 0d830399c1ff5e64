"""Figures of the application experiments, one function per figure, each drawn from its table only.

``anomaly_scores.csv`` → the in-neighbour bar plot (the paper's Fig. 4 view) and ROC curves;
``collaborators.csv`` → accuracy per selection policy; ``reciprocity.csv`` → influence exerted vs
received per edge; ``contribution.csv`` → estimated shares vs the leave-one-node-out ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from dice_repro.apps.anomaly import SCORERS, SETTING
from dice_repro.metrics import roc_auc, spearman

PANEL = 3.2  # inches per panel side
BAD, CLEAN = "tab:red", "tab:blue"
EXAMINATION = ["seed", "round", "corrupted", "examiner"]


def _panels(n: int, ncols: int = 4) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure with ``n`` panels in rows of ``ncols``; unused panels hidden."""
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = Figure(figsize=(PANEL * ncols, PANEL * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _settings(scores: pd.DataFrame) -> list[tuple]:
    """The (corruption, batch size, lr) settings of a scores table, in first-seen order."""
    return list(scores[SETTING].drop_duplicates().itertuples(index=False, name=None))


def _setting_rows(scores: pd.DataFrame, setting: tuple) -> tuple[pd.DataFrame, str]:
    """The rows of one setting and its panel title."""
    corruption, batch_size, lr = setting
    mask = (scores["corruption"] == corruption) & (scores["batch_size"] == batch_size) & (scores["lr"] == lr)
    return scores[mask], f"{corruption}, B={batch_size}, η={lr:g}"


def plot_anomaly_bars(scores: pd.DataFrame, scorer: str = "proximal") -> Figure:
    """One examiner's in-neighbour scores per setting (its first examination), the corrupted neighbour in red."""
    settings = _settings(scores)
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings):
        rows, title = _setting_rows(scores, setting)
        first = rows.iloc[0]
        exam = rows[(rows[EXAMINATION] == first[EXAMINATION]).all(axis=1)]
        colours = [BAD if hit else CLEAN for hit in exam["is_corrupted"]]
        ax.bar(exam["neighbour"].astype(str), exam[scorer], color=colours)
        ax.axhline(0, color="0.4", lw=0.8)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.set_title(f"{title}\nexaminer {first['examiner']}, round {first['round']}", fontsize=8)
        ax.set_xlabel("in-neighbour (red: corrupted batch)")
        ax.set_ylabel(f"{scorer} influence")
    return fig


def plot_roc(scores: pd.DataFrame) -> Figure:
    """Pooled ROC curves (corrupted vs clean in-neighbours) of every scorer, one panel per setting."""
    settings = _settings(scores)
    fig, axes = _panels(len(settings))
    for ax, setting in zip(axes, settings):
        rows, title = _setting_rows(scores, setting)
        labels = rows["is_corrupted"].to_numpy(bool)
        for scorer in SCORERS:
            fpr, tpr, _ = roc_curve(labels, rows[scorer])
            ax.plot(fpr, tpr, lw=1.2, ls="-" if scorer.startswith("proximal") else "--",
                    label=f"{scorer} (AUC {roc_auc(rows[scorer], labels):.2f})")
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls=":")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    return fig


def plot_selection(results: pd.DataFrame) -> Figure:
    """Final test accuracy of the clean nodes under each selection policy: one line per seed, mean marked."""
    fig, axes = _panels(2, 2)
    policies = list(dict.fromkeys(results["policy"]))
    x = {p: i for i, p in enumerate(policies)}
    for ax, column, label in zip(axes, ("accuracy_clean", "bad_kept"),
                                 ("test accuracy of clean nodes", "share of kept neighbours that are harmful")):
        for _, by_seed in results.groupby("seed"):
            ax.plot(by_seed["policy"].map(x), by_seed[column], color="0.7", lw=0.8, marker="o", ms=3)
        means = results.groupby("policy", sort=False)[column].mean()
        ax.scatter(means.index.map(x), means, color="k", marker="D", zorder=3, label="mean over seeds")
        ax.set_xticks(range(len(policies)), policies)
        ax.set_ylabel(label)
        ax.legend(fontsize=6)
    return fig


def plot_reciprocity(table: pd.DataFrame) -> Figure:
    """Per linked pair: influence exerted (j on k) vs received (k on j), by which side holds harmful data."""
    edges = table[table["level"] == "edge"]
    fig, axes = _panels(1)
    ax = axes[0]
    kinds = {"clean → clean": (~edges["j_bad"]) & (~edges["k_bad"]), "harmful → clean": edges["j_bad"] & ~edges["k_bad"],
             "clean → harmful": ~edges["j_bad"] & edges["k_bad"], "harmful → harmful": edges["j_bad"] & edges["k_bad"]}
    for (name, mask), colour in zip(kinds.items(), ("tab:blue", "tab:red", "tab:orange", "tab:purple")):
        if mask.any():
            ax.scatter(edges.loc[mask, "exerted"], edges.loc[mask, "received"], s=10, alpha=0.7, color=colour, label=name)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.ticklabel_format(style="sci", scilimits=(-2, 2))
    ax.set_xlabel("influence exerted, j on k")
    ax.set_ylabel("influence received, k on j")
    ax.set_title("reciprocity (negative = helped)", fontsize=8)
    ax.legend(fontsize=6)
    return fig


def plot_contribution(table: pd.DataFrame) -> Figure:
    """Estimated credit shares vs the leave-one-node-out shares, one panel per estimator; the title gives the
    mean over seeds of the Spearman between estimate and ground truth (all nodes, and clean nodes only)."""
    estimators = list(dict.fromkeys(table["estimator"]))
    fig, axes = _panels(len(estimators))
    for ax, name in zip(axes, estimators):
        rows = table[table["estimator"] == name]
        rhos = [spearman(r["estimate"], r["groundtruth"]) for _, r in rows.groupby("seed")]
        clean = [spearman(r["estimate"], r["groundtruth"]) for _, r in rows[~rows["bad"]].groupby("seed")]
        ax.scatter(rows["share"], rows["groundtruth_share"], s=12, alpha=0.8,
                   c=np.where(rows["bad"], BAD, CLEAN))
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        among_clean = f" (clean nodes {np.mean(clean):.2f})" if rows["bad"].any() else ""
        ax.set_title(f"{name}\nSpearman {np.mean(rhos):.2f}{among_clean}, {len(rhos)} seed{'s' * (len(rhos) > 1)}",
                     fontsize=8)
        ax.set_xlabel("estimated share (red: harmful data)")
        ax.set_ylabel("leave-one-node-out share")
    return fig


FIGURES: dict[str, tuple[str, Callable[[pd.DataFrame], Figure]]] = {
    "anomaly_bars": ("anomaly_scores.csv", plot_anomaly_bars),
    "anomaly_roc": ("anomaly_scores.csv", plot_roc),
    "selection": ("collaborators.csv", plot_selection),
    "reciprocity": ("reciprocity.csv", plot_reciprocity),
    "contribution": ("contribution.csv", plot_contribution),
}


def make_app_figures(tables_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Draw every figure whose table exists in ``tables_dir`` as PNG and PDF into ``out_dir``."""
    import seaborn as sns

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        for name, (table, draw) in FIGURES.items():
            path = Path(tables_dir) / table
            if not path.exists():
                continue
            fig = draw(pd.read_csv(path))
            for suffix in ("png", "pdf"):
                fig.savefig(out / f"{name}.{suffix}", dpi=150)
            written.append(out / f"{name}.png")
    return written
