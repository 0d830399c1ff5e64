"""The application experiments (issue 5): corruptions, detection, collaborator selection, contribution shares."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from dice_repro import data
from dice_repro.apps.anomaly import SCORERS, detection_metrics, detection_scores, score_round, weighted_auc
from dice_repro.apps.collaborators import (
    held_out_accuracy,
    reciprocity_table,
    select_rows,
    selection_experiment,
    warmup_influence,
)
from dice_repro.apps.commands import main
from dice_repro.apps.contribution import leave_one_node_out, leave_out_weights, node_estimates
from dice_repro.apps.corruption import Corruption, corrupt_batches, corrupt_nodes, pick_nodes
from dice_repro.apps.figures import FIGURES, make_app_figures
from dice_repro.engine import train
from dice_repro.influence.estimators import estimate_round
from dice_repro.influence.units import Unit
from dice_repro.metrics import roc_auc
from dice_repro.outputs import read_table
from dice_repro.settings import RunSettings
from dice_repro.trajectory import Run, build_run


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def small_run(ds, **overrides) -> Run:
    base = dict(dataset="digits", model="mlp", topology="exponential", nodes=8, samples_per_node=64, batch_size=16,
                epochs=3, lr=0.1, dtype="float64", unit_rounds="last_epoch", probe="stratified", probe_size=20)
    return build_run(RunSettings(**{**base, **overrides}), ds)


@pytest.fixture(scope="module")
def run(digits):
    return small_run(digits)


def test_label_permutation_keeps_the_label_multiset_and_changes_labels(run):
    p = run.problem
    bad = corrupt_batches(p, [(2, 3), (5, 0)], Corruption("label_permutation"), seed=1)
    for t, k in [(2, 3), (5, 0)]:
        before, after = p.y_train[p.schedule[t, k]], bad.y_train[bad.schedule[t, k]]
        assert sorted(before.tolist()) == sorted(after.tolist())
        assert (before != after).any()
        assert torch.equal(p.x_train[p.schedule[t, k]], bad.x_train[bad.schedule[t, k]])


def test_a_corruption_touches_only_its_targets(run):
    p = run.problem
    x0, y0 = p.x_train.clone(), p.y_train.clone()
    bad = corrupt_batches(p, [(4, 6)], Corruption("random_labels"), seed=0)
    changed = (bad.schedule != p.schedule).any(-1)
    assert changed.nonzero().tolist() == [[4, 6]]
    assert (bad.schedule[4, 6] >= len(y0)).all()  # the corrupted copies are appended
    assert torch.equal(p.x_train, x0) and torch.equal(p.y_train, y0)  # the original data is untouched
    assert torch.equal(bad.x_train[: len(y0)], x0) and torch.equal(bad.y_train[: len(y0)], y0)
    labels = bad.y_train[bad.schedule[4, 6]]
    assert ((labels >= 0) & (labels < 10)).all() and (labels != p.y_train[p.schedule[4, 6]]).any()


@pytest.mark.parametrize("std", [100.0, 1.0])
def test_gaussian_noise_has_the_set_std(run, std):
    p = run.problem
    bad = corrupt_nodes(p, [2], Corruption("gaussian_noise", std), seed=0)
    idx, new = p.schedule[:, 2].reshape(-1), bad.schedule[:, 2].reshape(-1)
    noise = bad.x_train[new] - p.x_train[idx]
    assert abs(float(noise.std()) / std - 1) < 0.05 and abs(float(noise.mean())) < 0.05 * std
    assert torch.equal(bad.y_train[new], p.y_train[idx])


def test_corrupting_a_node_is_one_fixed_copy_of_its_data(run):
    p = run.problem
    bad = corrupt_nodes(p, [1, 4], Corruption("random_labels"), seed=0)
    for k in range(p.nodes):
        pairs = set(zip(p.schedule[:, k].reshape(-1).tolist(), bad.schedule[:, k].reshape(-1).tolist()))
        assert len(pairs) == len({a for a, _ in pairs})  # a sample maps to one copy in every round
        assert (k in (1, 4)) == (bad.schedule[:, k] != p.schedule[:, k]).any()


def test_corruption_parsing_and_errors():
    assert Corruption.parse("gaussian_noise:100") == Corruption("gaussian_noise", 100.0)
    assert Corruption.parse("label_permutation").label == "label_permutation"
    for text in ("label_flip", "random_labels:3", "gaussian_noise:0"):
        with pytest.raises(ValueError, match="corruption"):
            Corruption.parse(text)
    assert pick_nodes(16, 0.25, 3) == pick_nodes(16, 0.25, 3) and len(pick_nodes(16, 0.25, 3)) == 4


def test_trial_scores_equal_the_run_trained_on_the_corrupted_batch(run):
    """The batched trial (clean θ^{t+1} shifted by the corrupted update) is the corrupted run's round t, exactly."""
    p, t, c = run.problem, 5, 5
    theta_t = train(p, run.theta0, record=[t], stop=t).states[t]
    every = corrupt_batches(p, [(t, k) for k in range(p.nodes)], Corruption("label_permutation"))
    frame = score_round(p, every, theta_t, t, [c])
    schedule = p.schedule.clone()
    schedule[t, c] = every.schedule[t, c]
    one = dataclasses.replace(every, schedule=schedule)  # the run in which only c's batch at t is corrupted
    g, _ = one.grads(theta_t, t)
    _, theta_next, _ = one.step(theta_t, t)
    pg_next, pg_t = p.probe_grad(theta_next), p.probe_grad(theta_t)
    W = p.W(t)
    assert set(frame["examiner"]) == {k for k in range(p.nodes) if k != c and W[k, c] > 0}
    for r in frame.itertuples():
        k, l = r.examiner, r.neighbour
        assert r.proximal == pytest.approx(float(-p.lr * W[k, l] * (g[l] @ pg_next[k])), rel=1e-9, abs=1e-15)
        assert r.proximal_at_t == pytest.approx(float(-(g[l] @ pg_t[k])), rel=1e-9, abs=1e-15)
        assert r.update_norm == pytest.approx(float(p.lr * g[l].norm()), rel=1e-12)
        assert r.neg_cosine == pytest.approx(float(-torch.nn.functional.cosine_similarity(g[l], g[k], dim=0)), rel=1e-9)
        assert r.is_corrupted == (l == c)


def test_strong_noise_neighbour_is_ranked_first(digits):
    """Gaussian noise of std 100 (the public code's): proximal influence puts the corrupted in-neighbour on top."""
    scores = detection_scores(small_run(digits, init="common"), [Corruption("gaussian_noise", 100.0)])
    first = scores.loc[scores.groupby(["round", "corrupted", "examiner"])["proximal"].idxmax()]
    assert first["is_corrupted"].mean() >= 0.95
    metrics = detection_metrics(scores, n_boot=50).set_index("scorer")
    assert metrics.loc["proximal", "p_at_1"] >= 0.95 and metrics.loc["proximal", "auc"] >= 0.95
    assert metrics.loc["proximal", "chance_p_at_1"] == pytest.approx(1 / 3)  # 8-node exponential: 3 in-neighbours
    assert metrics.loc["proximal", "trials"] == 8 * 4 and metrics.loc["proximal", "examinations"] == 8 * 4 * 3


def test_label_permutation_is_detected_better_than_chance(run):
    scores = detection_scores(run, [Corruption("label_permutation")])
    metrics = detection_metrics(scores, n_boot=200).set_index("scorer")
    row = metrics.loc["proximal"]
    assert row["auc_low"] > 0.5 and row["p_at_1_low"] > row["chance_p_at_1"]
    assert row["auc_low"] <= row["auc"] <= row["auc_high"] and row["p_at_1_low"] <= row["p_at_1"] <= row["p_at_1_high"]


def test_weighted_auc_equals_auc_of_the_resampled_rows():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=40), 1)  # ties included
    labels = rng.random(40) < 0.3
    counts = rng.integers(0, 3, size=(5, 40))
    expected = [roc_auc(np.repeat(scores, c), np.repeat(labels, c)) for c in counts]
    np.testing.assert_allclose(weighted_auc(scores, labels, counts), expected, rtol=1e-12)


def test_select_rows_keeps_w_row_stochastic_and_non_negative(digits):
    W = torch.tensor(small_run(digits, topology="erdos_renyi").topology.matrices[0])
    rng = np.random.default_rng(0)
    keep = {k: sorted(rng.choice([l for l in range(8) if l != k and W[k, l] > 0], 1, replace=False).tolist())
            for k in range(0, 8, 2)}
    out = select_rows(W, keep)
    assert (out >= 0).all()
    torch.testing.assert_close(out.sum(1), torch.ones(8, dtype=W.dtype))
    for k in range(8):
        support = set(torch.nonzero(out[k]).flatten().tolist())
        assert support == ({k, *keep[k]} if k in keep else set(torch.nonzero(W[k]).flatten().tolist()))
    with pytest.raises(ValueError, match="not its in-neighbours"):
        select_rows(W, {0: [l for l in range(1, 8) if W[0, l] == 0][:1]})


def test_warmup_influence_is_the_summed_proximal_influence(run):
    p = run.problem
    theta, total = warmup_influence(p, run.theta0, 3)
    expected = torch.zeros_like(total)
    state = run.theta0
    for t in range(3):
        g, _ = p.grads(state, t)
        _, state, _ = p.step(state, t)
        expected -= p.lr * p.W(t) * (p.probe_grad(state) @ g.T)
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(theta, train(p, run.theta0, stop=3).final)


def test_selection_experiment_and_reciprocity_tables(digits):
    run = small_run(digits, topology="erdos_renyi", epochs=2)
    results, recip = selection_experiment(run, [1, 6], Corruption("random_labels"), 2, 1)
    assert list(results["policy"]) == ["all", "dice", "random"]
    assert results.loc[results.policy != "all", "neighbours_kept"].max() <= 1
    assert results[["accuracy_clean", "bad_kept"]].notna().all().all()
    edges = recip[recip.level == "edge"].set_index(["j", "k"])
    for (j, k), row in edges.iterrows():  # every linked pair appears both ways, exerted and received swapped
        assert edges.loc[(k, j), "exerted"] == row["received"]
    assert set(recip.loc[recip.j_bad, "j"]) == {1, 6}


def test_selection_is_scored_on_test_images_outside_the_probe(run):
    probe = set(data.select_probe(run.dataset, "stratified", 20, run.settings.seed).tolist())
    rest = torch.tensor([i for i in range(len(run.dataset.y_test)) if i not in probe])
    theta = run.theta0
    expected = run.problem.accuracy(theta, run.dataset.x_test[rest].double(), run.dataset.y_test[rest])
    torch.testing.assert_close(held_out_accuracy(run, theta), expected)


def test_reciprocity_of_a_hand_made_influence_matrix():
    W = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
    infl = torch.tensor([[-9.0, -2.0, 0.0], [4.0, -9.0, -1.0], [0.0, -3.0, -9.0]])  # infl[k, l]: l on k
    table = reciprocity_table(infl, W, bad=[0]).set_index(["level", "j", "k"])
    assert table.loc[("edge", 0, 1), "exerted"] == 4.0 and table.loc[("edge", 0, 1), "received"] == -2.0
    assert table.loc[("edge", 0, 1), "reciprocity"] == -2.0
    assert table.loc[("node", 1, -1), "exerted"] == -5.0 and table.loc[("node", 1, -1), "received"] == 3.0


def test_leave_one_node_out_changes_only_that_node_and_matches_a_separate_retrain(digits):
    run = small_run(digits, nodes=6, epochs=1)
    p = run.problem
    weights = leave_out_weights(p, [2, 5])
    assert (weights[0] == 1).all() and (weights[1, 2] == 0).all() and (weights[2, 5] == 0).all()
    assert weights[1].sum() == weights[2].sum() == (p.nodes - 1) * p.batch_size  # other nodes' batches kept
    g, _ = p.grads(run.theta0.expand(3, -1, -1), 0, weights)
    factual, _ = p.grads(run.theta0, 0)
    others = [k for k in range(p.nodes) if k != 2]
    torch.testing.assert_close(g[1, others], factual[others])  # the same batches for everyone else
    assert (g[1, 2] == 0).all()
    batched = leave_one_node_out(p, run.theta0, [2, 5])
    for row, node in ((1, 2), (2, 5)):
        w = p.ones()
        w[node] = 0
        theta = run.theta0
        for t in range(p.rounds):
            _, theta, _ = p.step(theta, t, w)
        np.testing.assert_allclose(batched[row], p.probe_loss(theta).numpy(), rtol=1e-10)
    np.testing.assert_allclose(batched[0], p.probe_loss(train(p, run.theta0).final).numpy(), rtol=1e-10)


def test_summed_propagation_is_the_sum_of_the_per_batch_estimates(digits):
    """By linearity, propagating all of node j's perturbations together = Σ over its batches of the
    end-of-training propagation estimate (influence/estimators.py), on the mean probe loss."""
    run = small_run(digits, nodes=4, epochs=1, samples_per_node=48, model="logreg")
    p = run.problem
    ours = node_estimates(p, run.theta0, ["propagation", "one_hop"])
    states = train(p, run.theta0, record=range(p.rounds)).states
    total = np.zeros(p.nodes)
    one_hop = np.zeros(p.nodes)
    for t in range(p.rounds):
        units = [Unit(j, t) for j in range(p.nodes)]
        est = estimate_round(p, states[t], units, ["propagation", "one_hop"], horizon=1, to_end=True)
        total += est["propagation"][2].mean(-1)
        neighbours = est["one_hop"][1][:, 0] * (1 - np.eye(p.nodes))  # τ = 1 at the out-neighbours (SPEC §4)
        one_hop += (est["one_hop"][0] + neighbours.sum(-1)) / p.nodes
    np.testing.assert_allclose(ours["propagation"], total, rtol=1e-8)
    np.testing.assert_allclose(ours["one_hop"], one_hop, rtol=1e-8)


def test_contribution_estimates_track_leave_one_node_out(digits):
    """Small η: the first-order estimate of a node's leave-out effect is close to the retrained truth."""
    run = small_run(digits, nodes=6, epochs=1, lr=0.02, topology="ring")
    p = corrupt_nodes(run.problem, [1], Corruption("random_labels"), seed=0)
    est = node_estimates(p, run.theta0, ["propagation"])["propagation"]
    losses = leave_one_node_out(p, run.theta0, list(range(6))).mean(-1)
    truth = losses[0] - losses[1:]
    np.testing.assert_allclose(est, truth, rtol=0.1)
    assert pd.Series(est).rank().equals(pd.Series(truth).rank())


def test_commands_write_their_tables_and_figures(tmp_path):
    settings = json.dumps(dict(dataset="digits", model="logreg", topology="erdos_renyi", nodes=6, samples_per_node=32,
                               batch_size=16, epochs=2, dtype="float64", unit_rounds="last_epoch", probe_size=10))
    common = ["--settings", settings, "--out-dir", str(tmp_path), "--bootstrap", "20", "--wandb-mode", "disabled"]
    assert main(["anomaly", *common, "--corruptions", "gaussian_noise:100", "--lrs", "0.1", "0.05"]) == 0
    assert main(["collaborators", *common, "--keep", "1", "--warmup-rounds", "1"]) == 0
    assert main(["contribution", *common, "--seeds", "1", "2", "--estimators", "one_hop", "no_curvature"]) == 0
    anomaly, config = read_table(tmp_path / "anomaly.csv")
    assert set(anomaly["lr"]) == {0.1, 0.05} and set(anomaly["scorer"]) == set(SCORERS)
    assert config["corruptions"] == ["gaussian_noise:100"] and config["settings"]["nodes"] == 6
    assert len(read_table(tmp_path / "contribution.csv")[0]) == 2 * 2 * 6
    assert main(["anomaly", *common, "--corruptions", "label_flip"]) == 2  # a bad option is an error, not a traceback
    written = make_app_figures(tmp_path, tmp_path / "figures")
    assert sorted(p.stem for p in written) == sorted(FIGURES)
