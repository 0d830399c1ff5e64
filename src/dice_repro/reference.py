"""A plain per-node implementation of ATC-DSGD: one ``nn.Module`` per node, Python-loop gossip.

Small and readable on purpose: it is what the fast engine is tested and benchmarked against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def reference_train(
    models: list[nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    schedule: torch.Tensor,
    mixing: torch.Tensor,
    lr: float,
    rounds: int,
) -> list[nn.Module]:
    """Train ``models`` in place for ``rounds`` rounds of local SGD step + gossip (SPEC §1)."""
    n = len(models)
    for t in range(rounds):
        W = mixing[t % mixing.shape[0]]
        for k, model in enumerate(models):
            idx = schedule[t, k]
            model.zero_grad()
            F.cross_entropy(model(x_train[idx]), y_train[idx]).backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad
        with torch.no_grad():
            half = [[p.clone() for p in m.parameters()] for m in models]
            for k, model in enumerate(models):
                for i, p in enumerate(model.parameters()):
                    p.copy_(sum(W[k, l] * half[l][i] for l in range(n) if W[k, l] != 0))
    return models
