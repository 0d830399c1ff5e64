"""DICE-E (SPEC §4): first-order estimates of the influence field, all behind one interface.

``estimate_round`` computes every requested estimator for units that share a round, reusing one
factual forward run, its probe gradients and one batched Hessian-vector product per round.
Every estimator returns the field in the ground truth's shape: ``E[½, source]``, ``E[τ = 1.., k]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dice_repro.engine import Problem
from dice_repro.influence.path_sum import path_sum
from dice_repro.influence.units import Unit, by_round, chunk_size, field_frame, make_units, removed_update
from dice_repro.trajectory import Run

Field = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # (E[½, source] [U], E[1..h, k] [U, h, n], E_final [U, n])

ONE_STEP = ("one_hop", "proximal", "own_term", "cosine", "printed_sign")
PROPAGATED = ("propagation", "no_curvature", "second_order")
PATHS = ("path_sum", "path_sum_printed")


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _one_step(problem: Problem, theta_t: torch.Tensor, units: list[Unit], delta: torch.Tensor, names: list[str]) -> dict[str, Field]:
    """The one-hop estimators: no Hessian, gradients at θ_j^t (self) and θ_k^{t+1} (neighbours)."""
    t = units[0].round
    src = torch.tensor([u.source for u in units], device=delta.device)
    _, theta_next, _ = problem.step(theta_t, t)
    pg_self = problem.probe_grad(theta_t)[src]  # [U, P]
    pg_next = problem.probe_grad(theta_next)  # [n, P]
    w_col = problem.W(t)[:, src].T  # [U, n]: W[k, j] for each unit's source j
    self_dot = (pg_self * delta).sum(-1)
    next_dot = w_col * (delta @ pg_next.T)  # [U, n]
    out: dict[str, Field] = {}
    for name in names:
        if name == "one_hop":
            out[name] = (_np(self_dot), _np(next_dot)[:, None], None)
        elif name == "printed_sign":  # the Proposition's literal −∇Lᵀ(η Δ_j): sign flipped and η counted twice
            out[name] = (_np(-problem.lr * self_dot), _np(-problem.lr * next_dot)[:, None], None)
        elif name == "own_term":  # TracIn-style: the node's own term only
            out[name] = (_np(self_dot), np.zeros((len(units), 1, problem.nodes)), None)
        elif name == "proximal":  # Definition 4: what node k can compute about neighbour j (k ≠ j)
            prox = next_dot.clone()
            prox[torch.arange(len(units)), src] = 0
            out[name] = (np.zeros(len(units)), _np(prox)[:, None], None)
        elif name == "cosine":
            cos_self = F.cosine_similarity(pg_self, delta, dim=-1)
            cos_next = w_col * F.cosine_similarity(pg_next[None], delta[:, None], dim=-1)
            out[name] = (_np(cos_self), _np(cos_next)[:, None], None)
    return out


def _propagated(problem: Problem, theta_t: torch.Tensor, units: list[Unit], delta: torch.Tensor, names: list[str],
                horizon: int, to_end: bool) -> dict[str, Field]:
    """Exact linearised propagation of ``u`` (SPEC §4): one batched HVP per round, linear in the horizon."""
    t = units[0].round
    n_units, n = len(units), problem.nodes
    src = torch.tensor([u.source for u in units], device=delta.device)
    arange = torch.arange(n_units, device=delta.device)
    stop = problem.rounds if to_end else t + horizon
    curved = "propagation" in names or "second_order" in names
    flat = "no_curvature" in names
    half_f, theta, _ = problem.step(theta_t, t)
    u0 = torch.zeros(n_units, n, problem.fmodel.size, dtype=delta.dtype, device=delta.device)
    u0[arange, src] = delta  # u^{t+½}: only the source differs
    half_dot = (problem.probe_grad(half_f)[src] * delta).sum(-1)
    half_quad = -0.5 * (problem.probe_hvp(half_f, u0)[arange, src] * delta).sum(-1) if "second_order" in names else None
    u = {"curved": problem.gossip(u0, t) if curved else None, "flat": problem.gossip(u0, t) if flat else None}
    dots: dict[str, list[torch.Tensor]] = {"curved": [], "flat": [], "quad": []}
    final: dict[str, torch.Tensor] = {}
    for s in range(t + 1, stop + 1):
        record = s - t <= horizon
        if record or s == stop:
            pg = problem.probe_grad(theta)
            values = {key: torch.einsum("kp,ukp->uk", pg, v) for key, v in u.items() if v is not None}
            if "second_order" in names:
                values["quad"] = values["curved"] - 0.5 * (u["curved"] * problem.probe_hvp(theta, u["curved"])).sum(-1)
            for key, v in values.items():
                if record:
                    dots[key].append(v)
                if s == stop and to_end:
                    final[key] = v
        if s == stop:
            break
        if u["curved"] is not None:
            u["curved"] = u["curved"] - problem.lr * problem.batch_hvp(theta, u["curved"], s)
            u["curved"] = problem.gossip(u["curved"], s)
        if u["flat"] is not None:
            u["flat"] = problem.gossip(u["flat"], s)
        _, theta, _ = problem.step(theta, s)
    source = {"propagation": ("curved", half_dot), "no_curvature": ("flat", half_dot),
              "second_order": ("quad", half_dot + half_quad if half_quad is not None else None)}
    out: dict[str, Field] = {}
    for name in names:
        key, half = source[name]
        out[name] = (_np(half), _np(torch.stack(dots[key], 1)), _np(final[key]) if key in final else None)
    return out


def estimate_round(problem: Problem, theta_t: torch.Tensor, units: list[Unit], names: list[str] | tuple[str, ...],
                   horizon: int = 1, to_end: bool = False) -> dict[str, Field]:
    """Every estimator in ``names`` for units of one round."""
    with torch.no_grad():
        delta = removed_update(problem, theta_t, units)
        out = _one_step(problem, theta_t, units, delta, [n for n in names if n in ONE_STEP])
        prop = [n for n in names if n in PROPAGATED]
        if prop:
            out.update(_propagated(problem, theta_t, units, delta, prop, horizon, to_end))
        for name in (n for n in names if n in PATHS):
            placement = "relay" if name == "path_sum" else "printed"
            fields = [path_sum(problem, theta_t, u.source, u.round, d, horizon, placement) for u, d in zip(units, delta)]
            out[name] = (np.array([f[0] for f in fields]), np.stack([f[1] for f in fields]), None)
    return out


def estimate_field(run: Run, saved: dict[str, Any], progress: bool | None = None) -> pd.DataFrame:
    """The estimated fields of every unit of a trained run, one block of rows per estimator."""
    s, p = run.settings, run.problem
    units = make_units(s)
    states = {t: v.to(device=run.theta0.device, dtype=run.theta0.dtype) for t, v in saved["states"].items()}
    collected: dict[str, list] = {name: [] for name in s.estimators}
    order: list[int] = []
    for t, idx in tqdm(by_round(units, chunk_size(p, copies=12)), desc="estimate", unit="chunk", disable=None if progress is None else not progress, leave=False):
        fields = estimate_round(p, states[t], [units[i] for i in idx], s.estimators, s.horizon, s.end_of_training)
        order.extend(idx)
        for name, field in fields.items():
            collected[name].append(field)
    inverse = np.argsort(order)
    hops = run.topology.hop_distances()
    final_tau = np.array([p.rounds - u.round for u in units])
    frames = []
    for name, parts in collected.items():
        half = np.concatenate([f[0] for f in parts])[inverse]
        window = np.concatenate([f[1] for f in parts])[inverse]
        final = np.concatenate([f[2] for f in parts])[inverse] if parts[0][2] is not None else None
        frames.append(field_frame(units, hops, name, half, window, final, final_tau))
    return pd.concat(frames, ignore_index=True)
