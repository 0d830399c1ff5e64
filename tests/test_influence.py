"""Ground truth and estimators: the properties SPEC §3–§4 promise, checked numerically (float64)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from dice_repro import data
from dice_repro.engine import FlatModel
from dice_repro.influence.aggregate import dice_r, end_of_training, per_hop
from dice_repro.influence.estimators import estimate_field, estimate_round
from dice_repro.influence.groundtruth import groundtruth_field, replay
from dice_repro.influence.units import Unit, make_units
from dice_repro.settings import RunSettings
from dice_repro.trajectory import Run, build_run, train_run


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def trained(ds, **overrides) -> tuple[Run, dict[int, torch.Tensor]]:
    base = dict(dataset="digits", model="mlp", topology="exponential", nodes=8, samples_per_node=64, batch_size=16,
                epochs=2, lr=0.05, dtype="float64", horizon=3, unit_rounds=[2], probe="stratified", probe_size=20)
    settings = RunSettings(**{**base, **overrides})
    run = build_run(settings, ds)
    return run, train_run(run, progress=False).states


@pytest.mark.parametrize("topology,nodes", [("ring", 8), ("exponential", 8), ("hub16", 16)])
def test_propagation_equals_path_sum(digits, topology, nodes):
    run, states = trained(digits, topology=topology, nodes=nodes, samples_per_node=48)
    units = [Unit(j, 2) for j in (0, 3)]
    out = estimate_round(run.problem, states[2], units, ["propagation", "path_sum"], horizon=3)
    for r in (1, 2, 3):  # the window up to τ = r is the r-hop estimate
        np.testing.assert_allclose(out["propagation"][1][:, :r], out["path_sum"][1][:, :r], atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["propagation"][0], out["path_sum"][0], atol=1e-12)


def test_printed_curvature_placement_differs_from_relay(digits):
    run, states = trained(digits)
    out = estimate_round(run.problem, states[2], [Unit(1, 2)], ["path_sum", "path_sum_printed"], horizon=3)
    np.testing.assert_allclose(out["path_sum"][1][:, :1], out["path_sum_printed"][1][:, :1])  # no curvature before hop 2
    assert not np.allclose(out["path_sum"][1][:, 1:], out["path_sum_printed"][1][:, 1:], atol=0, rtol=1e-9)


def test_error_of_propagation_is_second_order_in_lr(digits):
    """Absolute error ∝ η², relative error ∝ η (the field itself is first order in η)."""
    run, states = trained(digits, model="logreg", lr=0.1)
    units = [Unit(j, 2) for j in range(8)]
    lrs = np.array([0.4, 0.2, 0.1, 0.05, 0.025])
    abs_err, rel_err = [], []
    for lr in lrs:
        run.problem.lr = float(lr)
        gt = replay(run.problem, states[2], units, horizon=3)
        est = estimate_round(run.problem, states[2], units, ["propagation"], horizon=3)["propagation"]
        g, e = np.concatenate([gt[0], gt[1].ravel()]), np.concatenate([est[0], est[1].ravel()])
        abs_err.append(np.abs(g - e).mean())
        rel_err.append(np.abs(g - e).mean() / np.abs(g).mean())
    abs_slope = np.polyfit(np.log(lrs), np.log(abs_err), 1)[0]
    rel_slope = np.polyfit(np.log(lrs), np.log(rel_err), 1)[0]
    assert 1.8 < abs_slope < 2.2, abs_slope
    assert 0.8 < rel_slope < 1.3, rel_slope


def test_batch_estimate_is_sum_of_sample_estimates(digits):
    run, states = trained(digits)
    b = run.settings.batch_size
    names = ["one_hop", "propagation", "second_order"]
    whole = estimate_round(run.problem, states[2], [Unit(2, 2)], names, horizon=3)
    samples = estimate_round(run.problem, states[2], [Unit(2, 2, (i,)) for i in range(b)], names, horizon=3)
    for name in ("one_hop", "propagation"):
        np.testing.assert_allclose(samples[name][0].sum(), whole[name][0][0], rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(samples[name][1].sum(0), whole[name][1][0], rtol=1e-9, atol=1e-14)


def test_removing_nothing_gives_a_zero_field(digits):
    run, states = trained(digits)
    half, window, final = replay(run.problem, states[2], [Unit(4, 2, ())], horizon=3, to_end=True)
    assert np.abs(half).max() < 1e-12 and np.abs(window).max() < 1e-12 and np.abs(final).max() < 1e-12


def test_one_hop_groundtruth_matches_hand_written_replay(digits):
    """SPEC §3: G[½, j] = L(θ_j^{t+½}) − L(θ_j^t); G[1, k] needs one replayed gossip with θ_j^t sent."""
    run, states = trained(digits)
    p, theta, t, j = run.problem, states[2], 2, 5
    fm = p.fmodel
    x, y = p.batch(t)
    g_j = torch.func.grad(fm.mean_loss)(theta[j], x[j], y[j])
    half_j = theta[j] - p.lr * g_j
    probe = lambda th: float(fm.mean_loss(th, p.x_probe, p.y_probe))  # noqa: E731
    expected_half = probe(half_j) - probe(theta[j])
    _, factual_next, _ = p.step(theta, t)
    W = p.W(t)
    expected = [probe(factual_next[k]) - probe(factual_next[k] - W[k, j] * (half_j - theta[j])) for k in range(p.nodes)]
    half, window, _ = replay(p, theta, [Unit(j, t)], horizon=1)
    assert half[0] == pytest.approx(expected_half, abs=1e-12)
    np.testing.assert_allclose(window[0, 0], expected, atol=1e-12)


def test_removing_a_label_permuted_batch_lowers_the_probe_loss(digits):
    """A batch whose labels were shuffled hurts: removing it gives a positive influence; a clean batch helped."""
    t = 30
    settings = RunSettings(dataset="digits", model="mlp", topology="ring", nodes=8, samples_per_node=96, batch_size=16,
                           epochs=6, lr=0.1, init="common", dtype="float64", horizon=1, unit_rounds=[t],
                           probe="stratified", probe_size=100)
    run = build_run(settings, digits)
    clean = dice_r(groundtruth_field(run, {"states": train_run(run, progress=False).states}), 1)["value"]
    y = run.problem.y_train.clone()
    gen = torch.Generator().manual_seed(0)
    for b in run.problem.schedule[t]:  # permute labels within each node's batch at round t
        y[b] = y[b][torch.randperm(len(b), generator=gen)]
    idx = run.problem.schedule[t].reshape(-1)
    assert sorted(y[idx].tolist()) == sorted(digits.y_train[idx].tolist())  # permutation keeps the label multiset
    run.problem.y_train = y
    corrupted = dice_r(groundtruth_field(run, {"states": train_run(run, progress=False).states}), 1)["value"]
    assert (clean < 0).all()
    assert corrupted.mean() > 0 and (corrupted > 0).mean() >= 0.75


def test_printed_sign_is_anticorrelated_and_one_hop_tracks_groundtruth(digits):
    run, states = trained(digits, unit_rounds="all", horizon=1, estimators=("one_hop", "printed_sign"), lr=0.1)
    saved = {"states": states}
    gt = dice_r(groundtruth_field(run, saved), 1)["value"].to_numpy()
    est = estimate_field(run, saved)
    one = dice_r(est[est.estimator == "one_hop"], 1)["value"].to_numpy()
    printed = dice_r(est[est.estimator == "printed_sign"], 1)["value"].to_numpy()
    assert len(gt) == 8 * run.settings.rounds
    assert spearmanr(one, gt)[0] > 0.95
    assert spearmanr(printed, gt)[0] < -0.95


class QuadraticProbe(FlatModel):
    """A flat model whose probe loss is an exact quadratic in the parameters."""

    def __init__(self, module, seed: int = 0):
        super().__init__(module)
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(self.size, 8, generator=gen, dtype=torch.float64)
        self.a, self.b = a / self.size**0.5, torch.randn(self.size, generator=gen, dtype=torch.float64) * 1e-2

    def mean_loss(self, flat, x, y):
        z = flat @ self.a
        return 0.5 * (z * z).sum() + self.b @ flat


def test_second_order_is_exact_for_a_quadratic_probe_loss(digits):
    run, states = trained(digits, model="logreg")
    old = run.problem.fmodel
    quad = QuadraticProbe(old.module)
    run.problem.fmodel = quad
    units = [Unit(j, 2) for j in range(4)]
    gt = replay(run.problem, states[2], units, horizon=1)
    est = estimate_round(run.problem, states[2], units, ["propagation", "second_order"], horizon=1)
    np.testing.assert_allclose(est["second_order"][0], gt[0], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(est["second_order"][1], gt[1], rtol=1e-9, atol=1e-14)
    assert np.abs(est["propagation"][1] - gt[1]).max() > 1e-10  # first order alone is not exact


def test_fields_have_the_table_shape_and_aggregate(digits):
    run, states = trained(digits, horizon=2, end_of_training=True, unit_rounds=[1, 3], unit_nodes=[0, 1],
                          estimators=("one_hop", "propagation", "cosine", "proximal", "own_term", "no_curvature"))
    saved = {"states": states}
    gt = groundtruth_field(run, saved)
    est = estimate_field(run, saved)
    cols = ["unit", "source", "round", "removed", "tau", "node", "hop", "final", "estimator", "value"]
    assert list(gt.columns) == cols and list(est.columns) == cols
    assert gt.unit.nunique() == 4 and np.isfinite(gt.value).all() and np.isfinite(est.value).all()
    assert set(gt[gt.final == 0].tau) == {0.5, 1.0, 2.0}
    assert set(gt[gt.final == 1].tau) == {float(run.settings.rounds - 1), float(run.settings.rounds - 3)}
    r2 = dice_r(gt, 2).set_index("unit")["value"]
    hops = per_hop(gt).pivot(index="unit", columns="hop", values="value")
    np.testing.assert_allclose(r2.to_numpy(), hops[[0, 1, 2]].sum(axis=1).to_numpy())
    assert len(end_of_training(est[est.estimator == "propagation"])) == 4
    assert (est[(est.estimator == "proximal") & (est.node == est.source) & (est.tau == 1)].value == 0).all()


def test_sample_units_and_cap(digits):
    settings = dataclasses.replace(RunSettings(dataset="digits", nodes=4, samples_per_node=32, batch_size=8, epochs=1),
                                   unit_kind="sample", samples_per_unit=2, max_units=10, horizon=1)
    units = make_units(settings)
    assert len(units) == 10 and all(len(u.samples) == 2 for u in units)
    assert units == make_units(settings)
