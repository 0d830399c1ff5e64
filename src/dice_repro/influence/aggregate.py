"""Aggregations of an influence field (SPEC §3): DICE-GT^(r)/DICE-E^(r), per-hop sums, end of training."""

from __future__ import annotations

import pandas as pd

KEYS = ["run", "unit", "source", "round", "estimator"]


def _keys(field: pd.DataFrame) -> list[str]:
    return [k for k in KEYS if k in field.columns]


def dice_r(field: pd.DataFrame, r: int) -> pd.DataFrame:
    """``q_j G[½, j] + Σ_{s=1..r} Σ_{k at hop s} q_k G[s, k]`` per unit (q = 1): each node counted once,
    at the round the perturbation first reaches it."""
    window = field[field["final"] == 0]
    take = (window["tau"] == 0.5) | ((window["tau"] == window["hop"]) & (window["hop"] >= 1) & (window["hop"] <= r))
    out = window[take].groupby(_keys(field), sort=False)["value"].sum().reset_index()
    out.insert(len(out.columns) - 1, "r", r)
    return out


def per_hop(field: pd.DataFrame) -> pd.DataFrame:
    """``hop 0 = G[½, j]``, ``hop s = Σ_{k at hop s} G[s, k]`` per unit."""
    window = field[field["final"] == 0]
    take = (window["tau"] == 0.5) | ((window["tau"] == window["hop"]) & (window["hop"] >= 1))
    return window[take].groupby(_keys(field) + ["hop"], sort=False)["value"].sum().reset_index()


def end_of_training(field: pd.DataFrame) -> pd.DataFrame:
    """Total influence on every node's probe loss at the end of training, per unit."""
    final = field[field["final"] == 1]
    return final.groupby(_keys(field), sort=False)["value"].sum().reset_index()
