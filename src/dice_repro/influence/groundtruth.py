"""DICE-GT (SPEC §3): counterfactual replays with one unit removed and everything else identical.

Replays of many units run together along a leading axis of the engine's state; row 0 of that
axis is the factual run itself, so factual and counterfactual losses come from the same code path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from dice_repro.engine import Problem
from dice_repro.influence.units import Unit, by_round, chunk_size, field_frame, make_units, removed_update
from dice_repro.trajectory import Run


def _replay_step(problem: Problem, state: torch.Tensor, s: int) -> torch.Tensor:
    """One round for the factual row 0 and every replay; only (replay, node) rows that differ from the
    factual row get their own gradient, the rest reuse the factual one (the perturbation spreads one
    hop per round, so early rounds touch few rows)."""
    g0, _ = problem.grads(state[0], s)
    u_idx, k_idx = (state[1:] != state[0]).any(-1).nonzero(as_tuple=True)
    g = g0.expand_as(state).clone()
    if len(u_idx):
        g[1 + u_idx, k_idx] = problem.node_grads(state[1 + u_idx, k_idx], k_idx, s, problem.ones()[k_idx])
    return problem.gossip(state - problem.lr * g, s)


def replay(
    problem: Problem, theta_t: torch.Tensor, units: list[Unit], horizon: int, to_end: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Influence field of units that share round t: ``G[½, source]`` ``[U]``, ``G[1..h, k]`` ``[U, h, n]``
    and, with ``to_end``, ``G`` at the end of training ``[U, n]``."""
    t = units[0].round
    if any(u.round != t for u in units):
        raise ValueError("replay() takes units of one round; group them with by_round()")
    n_units = len(units)
    stop = problem.rounds if to_end else t + horizon
    rows = torch.arange(1, n_units + 1, device=theta_t.device)
    sources = torch.tensor([u.source for u in units], device=theta_t.device)
    with torch.no_grad():
        factual_half, _, _ = problem.step(theta_t, t)
        half = factual_half.expand(n_units + 1, *theta_t.shape).clone()
        # the counterfactual local step of the source: the factual one minus the removed part
        half[rows, sources] -= removed_update(problem, theta_t, units)
        whole = [i for i, u in enumerate(units) if u.samples is None]
        half[rows[whole], sources[whole]] = theta_t[sources[whole]]  # no local update at all, exactly
        losses_half = problem.probe_loss(half[0, sources])
        cf_half = problem.probe_loss(half[rows, sources])
        g_half = (losses_half - cf_half).cpu().numpy()
        state = problem.gossip(half, t)
        window = []
        for s in range(t + 1, stop + 1):
            if s - t <= horizon:
                loss = problem.probe_loss(state)
                window.append((loss[0] - loss[1:]).cpu().numpy())
            if s == stop:
                break
            state = _replay_step(problem, state, s)
        final = None
        if to_end:
            loss = problem.probe_loss(state)
            final = (loss[0] - loss[1:]).cpu().numpy()
    return g_half, np.stack(window, axis=1), final


def groundtruth_field(run: Run, saved: dict[str, Any], progress: bool | None = None) -> pd.DataFrame:
    """The ground-truth field of every unit of a trained run (tidy rows, estimator 'groundtruth')."""
    s, p = run.settings, run.problem
    units = make_units(s)
    states = {t: v.to(device=run.theta0.device, dtype=run.theta0.dtype) for t, v in saved["states"].items()}
    half = np.zeros(len(units))
    window = np.zeros((len(units), s.horizon, s.nodes))
    final = np.zeros((len(units), s.nodes)) if s.end_of_training else None
    for t, idx in tqdm(by_round(units, chunk_size(p)), desc="groundtruth", unit="chunk", disable=None if progress is None else not progress, leave=False):
        h, w, f = replay(p, states[t], [units[i] for i in idx], s.horizon, s.end_of_training)
        half[idx], window[idx] = h, w
        if final is not None:
            final[idx] = f
    final_tau = np.array([p.rounds - u.round for u in units])
    return field_frame(units, run.topology.hop_distances(), "groundtruth", half, window, final, final_tau)
