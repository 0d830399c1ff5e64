"""Collaborator selection by DICE, and reciprocity (SPEC §4, the paper's Definition 5), evaluated.

Some nodes hold harmful data. During a warm-up every node ``k`` accumulates the one-hop (proximal)
influence of each in-neighbour ``l`` on its probe, ``Σ_t −η W[k,l] ⟨g_l^t, ∇L(θ_k^{t+1}; z')⟩`` (q = 1;
negative = ``l`` helped). Then it keeps its ``keep`` most helpful in-neighbours (lowest influence) plus
itself and renormalises its row of ``W`` for the rest of training. Baselines: keep every neighbour, or
``keep`` random ones. The measure is the final test accuracy of the nodes with clean data, on the test
images outside the probe.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from dice_repro import data
from dice_repro.apps.corruption import Corruption, corrupt_nodes
from dice_repro.engine import Problem, check_finite, train
from dice_repro.trajectory import Run

POLICIES = ("all", "dice", "random")


def select_rows(W: torch.Tensor, keep: dict[int, list[int]]) -> torch.Tensor:
    """``W`` with each row ``k`` of ``keep`` restricted to node ``k`` itself and its in-neighbours ``keep[k]``,
    renormalised to sum to 1: non-negative and row-stochastic again. Other rows are unchanged."""
    out = W.clone()
    for k, kept in keep.items():
        stray = [int(l) for l in kept if W[k, l] <= 0]
        if stray:
            raise ValueError(f"node {k} cannot keep {stray}: they are not its in-neighbours (W[{k}, l] = 0)")
        mask = torch.zeros(W.shape[1], dtype=torch.bool, device=W.device)
        mask[[k, *kept]] = True
        row = torch.where(mask, W[k], torch.zeros_like(W[k]))
        if row.sum() <= 0:
            raise ValueError(f"node {k} would keep no weight at all (W[{k}, {k}] = 0 and no neighbour kept)")
        out[k] = row / row.sum()
    return out


def warmup_influence(problem: Problem, theta0: torch.Tensor, rounds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train ``rounds`` rounds; return ``θ^rounds`` and ``I[k, l] = Σ_t −η W^t[k,l] ⟨g_l^t, ∇L(θ_k^{t+1}; z')⟩``.

    Off the diagonal, ``I[k, l]`` is what node ``k`` can compute about in-neighbour ``l`` (the proximal
    influence of Definition 4, summed); the diagonal is the node's own term at ``θ_k^{t+1}``.
    """
    theta = theta0
    total = torch.zeros(problem.nodes, problem.nodes, dtype=theta0.dtype, device=theta0.device)
    with torch.no_grad():
        for t in range(rounds):
            g, loss = problem.grads(theta, t)
            theta = problem.gossip(theta - problem.lr * g, t)
            check_finite(theta, loss, t)
            total -= problem.lr * problem.W(t) * (problem.probe_grad(theta) @ g.T)
    return theta, total


def held_out_accuracy(run: Run, theta: torch.Tensor) -> torch.Tensor:
    """Test accuracy of every node on the test images outside the probe (the probe drove the selection)."""
    s, p = run.settings, run.problem
    keep = torch.ones(run.dataset.y_test.shape[0], dtype=torch.bool)
    keep[data.select_probe(run.dataset, s.probe, s.probe_size, s.seed)] = False
    x = run.dataset.x_test[keep].to(device=p.x_train.device, dtype=p.x_train.dtype)
    with torch.no_grad():
        return p.accuracy(theta, x, run.dataset.y_test[keep].to(p.x_train.device))


def in_neighbours(W: torch.Tensor, k: int) -> list[int]:
    """Nodes ``l ≠ k`` with ``W[k, l] > 0``."""
    return [int(l) for l in torch.nonzero(W[k] > 0).flatten() if l != k]


def choose(W: torch.Tensor, influence: torch.Tensor, keep: int, policy: str, rng: np.random.Generator) -> dict[int, list[int]]:
    """The in-neighbours every node keeps: ``dice`` = the ``keep`` lowest accumulated influences (most helpful),
    ``random`` = ``keep`` drawn uniformly; a node with fewer neighbours keeps them all."""
    out = {}
    for k in range(W.shape[0]):
        nbrs = in_neighbours(W, k)
        if policy == "dice":
            out[k] = sorted(nbrs, key=lambda l: float(influence[k, l]))[:keep]
        elif policy == "random":
            out[k] = sorted(int(l) for l in rng.choice(nbrs, min(keep, len(nbrs)), replace=False))
        else:
            raise ValueError(f"unknown selection policy {policy!r}; choose 'dice' or 'random'")
    return out


def reciprocity_table(influence: torch.Tensor, W: torch.Tensor, bad: list[int]) -> pd.DataFrame:
    """Definition 5 per ordered pair ``(j, k)`` linked both ways: ``exerted`` = influence of ``j`` on ``k``
    (``I[k, j]``), ``received`` = of ``k`` on ``j`` (``I[j, k]``), ``reciprocity = exerted / received``;
    and per node (level ``node``): the sums over its out-neighbours and in-neighbours."""
    infl, links = influence.cpu().numpy(), (W > 0).cpu().numpy()
    n = infl.shape[0]
    off = ~np.eye(n, dtype=bool)
    j, k = np.nonzero(links.T & links & off)  # links[k, j] and links[j, k]
    edges = pd.DataFrame({"level": "edge", "j": j, "k": k, "exerted": infl[k, j], "received": infl[j, k]})
    nodes = pd.DataFrame({"level": "node", "j": np.arange(n), "k": -1,
                          "exerted": (infl * (links & off)).sum(0), "received": (infl * (links & off)).sum(1)})
    table = pd.concat([edges, nodes], ignore_index=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        table["reciprocity"] = table["exerted"] / table["received"]
    table["j_bad"] = table["j"].isin(bad)
    table["k_bad"] = table["k"].isin(bad)
    return table


def selection_experiment(
    run: Run, bad: list[int], corruption: Corruption, warmup_rounds: int, keep: int, progress: bool | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One seed: warm up, select by each policy, train to the end; return (policy results, reciprocity table)."""
    s = run.settings
    if run.problem.mixing.shape[0] != 1:
        raise ValueError(f"collaborator selection needs a static topology; {s.topology!r} changes every round")
    if not 0 < warmup_rounds < run.problem.rounds:
        raise ValueError(f"warmup_rounds={warmup_rounds} must lie in 1..{run.problem.rounds - 1} (the run has "
                         f"{run.problem.rounds} rounds)")
    problem = corrupt_nodes(run.problem, bad, corruption, seed=s.seed)
    theta, influence = warmup_influence(problem, run.theta0, warmup_rounds)
    W = problem.W(0)
    rng = np.random.default_rng([s.seed, 1])  # a stream of its own, unrelated to the choice of harmful nodes
    clean = torch.tensor([k not in bad for k in range(problem.nodes)], device=W.device)
    rows = []
    for policy in POLICIES:
        selected = W if policy == "all" else select_rows(W, choose(W, influence, keep, policy, rng))
        mixing = torch.cat([W.expand(warmup_rounds, -1, -1), selected.expand(problem.rounds - warmup_rounds, -1, -1)])
        final = train(dataclasses.replace(problem, mixing=mixing), theta, start=warmup_rounds, progress=progress).final
        acc = held_out_accuracy(run, final)
        kept = (selected > 0) & ~torch.eye(problem.nodes, dtype=torch.bool, device=W.device)
        kept_clean = kept[clean]
        rows.append({"policy": policy, "accuracy_clean": float(acc[clean].mean()),
                     "accuracy_bad": float(acc[~clean].mean()) if bad else float("nan"),
                     "accuracy_all": float(acc.mean()),
                     "bad_kept": float(kept_clean[:, ~clean].sum() / kept_clean.sum()),
                     "neighbours_kept": float(kept.sum(1).double().mean())})
    return pd.DataFrame(rows), reciprocity_table(influence, W, bad)


def policy_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per policy over seeds: the clean nodes' accuracy (mean, sd), its paired difference to keeping every
    neighbour (mean, min, max, seeds where it is higher) and the share of harmful neighbours kept."""
    acc = results.pivot(index="seed", columns="policy", values="accuracy_clean")
    diff = acc.sub(acc["all"], axis=0)
    summary = pd.DataFrame({"accuracy_clean": acc.mean(), "sd": acc.std(), "vs_all": diff.mean(),
                            "vs_all_min": diff.min(), "vs_all_max": diff.max(), "seeds_above_all": (diff > 0).sum(),
                            "bad_kept": results.groupby("policy")["bad_kept"].mean()})
    return summary.loc[[p for p in POLICIES if p in summary.index]]
