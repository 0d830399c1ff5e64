"""Contribution shares: each node's DICE influence summed over its batches, checked against leaving it out.

Every estimate and the ground truth measure the same thing, the network's probe loss
``L̄ = (1/n) Σ_k L(θ_k; z')`` (node weights ``q_k = 1/n``), with the usual sign (influence = with − without;
negative = the node's data helped). A node's *share* of the credit is ``−influence / Σ_i |influence_i|``.

Ground truth: retrain with node ``j``'s data left out for the whole training (its local step is skipped
every round; it still gossips; same initialisation, schedule and mixing for everyone else) and compare
``L̄`` at the end. All leave-outs run together along the engine's leading replay axis.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dice_repro.apps.corruption import Corruption, corrupt_nodes
from dice_repro.engine import Problem, check_finite
from dice_repro.influence.units import chunk_size
from dice_repro.metrics import bootstrap_ci, spearman
from dice_repro.trajectory import Run

ESTIMATORS = ("one_hop", "own_term", "propagation", "no_curvature")
PROPAGATED = ("propagation", "no_curvature")


def node_estimates(problem: Problem, theta0: torch.Tensor, names: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """Train the factual run once and sum each node's DICE-E over all its batches, ``[n]`` per estimator.

    ``one_hop``: the paper's one-hop estimate of every batch (own term at ``θ_j^t``, out-neighbours at
    ``θ_k^{t+1}``); ``own_term``: the own term only (a TracIn-style baseline); ``propagation``: the summed
    perturbation ``V_j`` of all of node j's batches propagated to the end of training through
    ``(I − η H)`` and ``W`` (SPEC §4; by linearity the sum of the per-batch end-of-training estimates), read
    with the final probe gradients; ``no_curvature``: the same propagation without the Hessian factor.
    The propagated estimators hold ``V`` as ``[n, n, P]``: memory grows with n² times the model size.
    """
    bad = sorted(set(names) - set(ESTIMATORS))
    if bad:
        raise ValueError(f"unknown contribution estimator(s) {bad}; choose from {', '.join(ESTIMATORS)}")
    n, lr = problem.nodes, problem.lr
    eye = torch.eye(n, dtype=torch.bool, device=theta0.device)
    sums = {name: torch.zeros(n, dtype=theta0.dtype, device=theta0.device) for name in names if name not in PROPAGATED}
    spread = {name: theta0.new_zeros(n, n, theta0.shape[-1]) for name in names if name in PROPAGATED}  # V[source, node]
    diagonal = (torch.arange(n, device=theta0.device),) * 2  # V[j, j]: where node j's own batches enter
    theta = theta0
    with torch.no_grad():
        for t in range(problem.rounds):
            g, loss = problem.grads(theta, t)
            own = -lr * (problem.probe_grad(theta) * g).sum(-1) / n if sums else None
            if "propagation" in spread:
                spread["propagation"] -= lr * problem.batch_hvp(theta, spread["propagation"], t)
            for v in spread.values():
                v[diagonal] -= lr * g  # u^{t+½} of this round's batches: Δ_j = −η g_j
                v.copy_(problem.gossip(v, t))
            theta_next = problem.gossip(theta - lr * g, t)
            check_finite(theta_next, loss, t)
            if "own_term" in sums:
                sums["own_term"] += own
            if "one_hop" in sums:
                cross = problem.W(t) * (problem.probe_grad(theta_next) @ g.T)  # [k, j]: W[k,j] ⟨∇L(θ_k^{t+1}), g_j⟩
                sums["one_hop"] += own - lr * cross.masked_fill(eye, 0).sum(0) / n
            theta = theta_next
        final_grad = problem.probe_grad(theta)
        for name, v in spread.items():
            sums[name] = torch.einsum("kp,jkp->j", final_grad, v) / n
    return {name: sums[name].cpu().numpy() for name in names}


def leave_out_weights(problem: Problem, nodes: list[int]) -> torch.Tensor:
    """Sample weights ``[1 + len(nodes), n, B]``: row 0 the factual run, row ``u`` zero on node ``nodes[u-1]`` only."""
    weights = problem.ones().expand(1 + len(nodes), -1, -1).clone()
    rows = torch.arange(1, 1 + len(nodes), device=weights.device)
    weights[rows, torch.tensor(nodes, dtype=torch.long, device=weights.device)] = 0
    return weights


def leave_one_node_out(problem: Problem, theta0: torch.Tensor, nodes: list[int]) -> np.ndarray:
    """Final probe losses ``[1 + len(nodes), n]`` of the factual run (row 0) and of each retrain with one
    node's data left out, batched along the leading replay axis (in chunks that fit in memory)."""
    chunk = chunk_size(problem, copies=4)
    rows = []
    with torch.no_grad():
        for start in range(0, max(len(nodes), 1), chunk):
            part = nodes[start:start + chunk]
            weights = leave_out_weights(problem, part)
            theta = theta0.expand(weights.shape[0], -1, -1).clone()
            for t in range(problem.rounds):
                _, theta, loss = problem.step(theta, t, weights)
                check_finite(theta, loss, t)
            losses = problem.probe_loss(theta)
            rows.append(losses if start == 0 else losses[1:])
    return torch.cat(rows).cpu().numpy()


def shares(values: np.ndarray) -> np.ndarray:
    """Credit shares ``−v / Σ|v|``: positive for nodes that helped, absolute values summing to 1."""
    total = np.abs(values).sum()
    return -values / total if total > 0 else np.zeros_like(values)


def contribution_experiment(run: Run, bad: list[int], corruption: Corruption, names: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """One seed: every node's estimated influence and share next to its leave-it-out ground truth."""
    problem = corrupt_nodes(run.problem, bad, corruption, seed=run.settings.seed)
    estimates = node_estimates(problem, run.theta0, names)
    losses = leave_one_node_out(problem, run.theta0, list(range(problem.nodes))).mean(-1)
    truth = losses[0] - losses[1:]
    frames = [pd.DataFrame({"node": np.arange(problem.nodes), "bad": np.isin(np.arange(problem.nodes), bad),
                            "estimator": name, "estimate": value, "share": shares(value),
                            "groundtruth": truth, "groundtruth_share": shares(truth)})
              for name, value in estimates.items()]
    return pd.concat(frames, ignore_index=True)


def agreement(table: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Spearman of estimate vs ground truth per estimator and seed, with a bootstrap interval over nodes:
    over all nodes, and over the clean nodes only (where the harmful/clean split no longer carries the ranking)."""
    rows = []
    for (name, seed), part in table.groupby(["estimator", "seed"], sort=False):
        for nodes, sel in (("all", part), ("clean", part[~part["bad"]])):
            if nodes == "clean" and len(sel) == len(part):
                continue
            low, high = bootstrap_ci(sel["estimate"], sel["groundtruth"], "spearman", n_boot=n_boot, seed=int(seed))
            rows.append({"estimator": name, "seed": seed, "nodes": nodes, "n": len(sel),
                         "spearman": spearman(sel["estimate"], sel["groundtruth"]), "low": low, "high": high})
    return pd.DataFrame(rows)
