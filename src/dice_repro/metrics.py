"""Agreement between estimated and true influence: correlations, sign agreement, bootstrap
intervals, and detection scores (ROC AUC, precision at k) for the anomaly experiments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

STATISTICS = ("pearson", "spearman", "sign_agreement")


def _pair(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long 1-D float arrays."""
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired metrics need equally long inputs, got {x.size} and {y.size}")
    return x, y


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either row is constant."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    denom = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / denom
    return np.where(denom > 0, np.clip(r, -1.0, 1.0), np.nan)


def _rowwise(name: str, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One of ``STATISTICS`` along the last axis (ties ranked by their average rank)."""
    if name == "pearson":
        return _rowwise_pearson(x, y)
    if name == "spearman":
        return _rowwise_pearson(stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1))
    if name == "sign_agreement":
        return (np.sign(x) == np.sign(y)).mean(axis=-1)
    raise ValueError(f"unknown statistic {name!r}; choose one of {', '.join(STATISTICS)}")


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (NaN for fewer than 2 pairs or a constant input)."""
    x, y = _pair(x, y)
    return float(_rowwise("pearson", x, y)) if x.size >= 2 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (NaN for fewer than 2 pairs or a constant input)."""
    x, y = _pair(x, y)
    return float(_rowwise("spearman", x, y)) if x.size >= 2 else float("nan")


def sign_agreement(x: Sequence[float], y: Sequence[float]) -> float:
    """Fraction of pairs whose signs agree (helped vs hurt; exact zeros only match zeros)."""
    x, y = _pair(x, y)
    return float(_rowwise("sign_agreement", x, y)) if x.size else float("nan")


def bootstrap_indices(n: int, n_boot: int, strata: Sequence | None = None, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` resampling indices, drawn with replacement within each stratum (e.g. seed)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        return rng.integers(0, n, size=(n_boot, n))
    labels = np.asarray(strata)
    if labels.shape != (n,):
        raise ValueError(f"strata must have one label per unit ({n}), got shape {labels.shape}")
    out = np.empty((n_boot, n), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
    return out


def bootstrap_ci(
    x: Sequence[float],
    y: Sequence[float],
    statistic: str = "spearman",
    strata: Sequence | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a paired statistic, resampling units (within strata when given)."""
    x, y = _pair(x, y)
    if x.size < 3 or n_boot < 1:
        return float("nan"), float("nan")
    idx = bootstrap_indices(x.size, n_boot, strata, seed)
    values = _rowwise(statistic, x[idx], y[idx])
    if np.isnan(values).all():
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random positive outranks a random negative (ties count ½)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if s.shape != pos.shape:
        raise ValueError(f"roc_auc needs one label per score, got {s.size} scores and {pos.size} labels")
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: Sequence[float], labels: Sequence[bool], k: int) -> float:
    """Fraction of positives among the ``k`` highest scores (ties keep the input order)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    pos = np.asarray(labels, dtype=bool).ravel()
    if s.shape != pos.shape:
        raise ValueError(f"precision_at_k needs one label per score, got {s.size} scores and {pos.size} labels")
    if not 1 <= k <= s.size:
        raise ValueError(f"k must lie in 1..{s.size}, got {k}")
    top = np.argsort(-s, kind="stable")[:k]
    return float(pos[top].mean())
