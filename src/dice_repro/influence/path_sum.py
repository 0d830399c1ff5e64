"""The r-hop DICE-E Theorem as printed: a sum over every directed path from the source (SPEC §4).

Exponential in r; kept as the reference that the linear-cost propagation is tested against, and
for the curvature-placement ablation (Hessian at the relay node, as ATC implies, or at the next
node, as the Theorem's statement prints).
"""

from __future__ import annotations

import numpy as np
import torch

from dice_repro.engine import Problem


def path_sum(
    problem: Problem, theta_t: torch.Tensor, source: int, t: int, delta: torch.Tensor, r: int, placement: str = "relay"
) -> tuple[float, np.ndarray]:
    """``(E[½, source], E[1..r, k])`` by enumerating paths ``source = k_0 → k_1 → … → k_ρ`` (self-loops included).

    A path carries ``Π W[k_s, k_{s-1}] (I − η H) Δ``; its term at depth ρ is ``∇L(θ_{k_ρ}^{t+ρ}; z')ᵀ`` of that.
    """
    if placement not in ("relay", "printed"):
        raise ValueError(f"placement must be 'relay' or 'printed', got {placement!r}")
    with torch.no_grad():
        half, theta, _ = problem.step(theta_t, t)
        e_half = float(problem.probe_grad(half[source]) @ delta)
        states = [theta_t, theta]  # θ^{t+s} for s = 0, 1, …
        for s in range(1, r):
            states.append(problem.step(states[-1], t + s)[1])
        nodes = torch.tensor([source], device=delta.device)
        vecs = delta.unsqueeze(0)
        out = np.zeros((r, problem.nodes))
        for depth in range(1, r + 1):
            rnd = t + depth - 1  # the gossip that brings the perturbation to depth `depth`
            W = problem.W(rnd)
            paths, nxt = torch.nonzero(W[:, nodes].T > 0, as_tuple=True)  # every (path, next node k) with W[k, end] > 0
            v = vecs[paths]
            if depth > 1:  # curvature of the local step at round rnd, before this gossip
                at = nodes[paths] if placement == "relay" else nxt
                v = v - problem.lr * problem.node_hvp(states[depth - 1][at], v, at, rnd)
            v = W[nxt, nodes[paths]].unsqueeze(-1) * v
            pg = problem.probe_grad(states[depth])
            contrib = (pg[nxt] * v).sum(-1)
            out[depth - 1] = torch.zeros(problem.nodes, dtype=v.dtype, device=v.device).index_add_(0, nxt, contrib).cpu().numpy()
            nodes, vecs = nxt, v
    return e_half, out
