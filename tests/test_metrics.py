"""The agreement metrics against scipy and scikit-learn on random data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from dice_repro import metrics


@pytest.fixture(params=[0, 1, 2])
def pairs(request):
    rng = np.random.default_rng(request.param)
    x = rng.normal(size=200)
    y = 0.7 * x + rng.normal(size=200)
    y[:20] = np.round(y[:20])  # some ties
    return x, y


def test_correlations_match_scipy(pairs):
    x, y = pairs
    assert metrics.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_sign_agreement(pairs):
    x, y = pairs
    assert metrics.sign_agreement(x, y) == pytest.approx(np.mean(np.sign(x) == np.sign(y)))
    assert metrics.sign_agreement([1, -2, 0], [3, -1, 0]) == 1.0
    assert metrics.sign_agreement([1, -2], [-3, 1]) == 0.0


def test_degenerate_inputs_give_nan():
    assert np.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(metrics.spearman([1.0], [2.0]))
    assert all(np.isnan(metrics.bootstrap_ci([1, 2], [1, 2])))
    with pytest.raises(ValueError, match="equally long"):
        metrics.pearson([1, 2, 3], [1, 2])


def test_bootstrap_matches_scipy_percentile_interval(pairs):
    x, y = pairs
    low, high = metrics.bootstrap_ci(x, y, "spearman", n_boot=2000, seed=3)
    ref = stats.bootstrap((x, y), lambda a, b: stats.spearmanr(a, b)[0], paired=True, vectorized=False,
                          n_resamples=2000, method="percentile", random_state=3).confidence_interval
    assert low < metrics.spearman(x, y) < high
    assert low == pytest.approx(ref.low, abs=0.03) and high == pytest.approx(ref.high, abs=0.03)
    assert metrics.bootstrap_ci(x, y, n_boot=500, seed=7) == metrics.bootstrap_ci(x, y, n_boot=500, seed=7)


def test_bootstrap_resamples_within_strata():
    strata = np.repeat(["a", "b", "c"], [5, 10, 15])
    idx = metrics.bootstrap_indices(30, 200, strata, seed=0)
    for label in "abc":
        members = np.flatnonzero(strata == label)
        assert np.isin(idx[:, members], members).all()
    with pytest.raises(ValueError, match="one label per unit"):
        metrics.bootstrap_indices(30, 10, strata[:5])


def test_roc_auc_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.random(100) < 0.3
        scores = labels + rng.normal(size=100)
        scores[:10] = np.round(scores[:10])
        assert metrics.roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(metrics.roc_auc([1, 2], [True, True]))


def test_precision_at_k():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=50)
    labels = rng.random(50) < 0.5
    for k in (1, 5, 50):
        top = np.argsort(scores)[::-1][:k]
        assert metrics.precision_at_k(scores, labels, k) == pytest.approx(labels[top].mean())
    with pytest.raises(ValueError, match="k must lie"):
        metrics.precision_at_k(scores, labels, 0)
