"""Malicious-neighbour detection (SPEC §4 proximal influence, §7 E3, §8), measured as detection.

A trial: at round ``t`` the batch of one node ``c`` is corrupted, at that round only, so ``θ^t`` is the
clean run's state and the trial is exactly round ``t`` of the run trained on the corrupted data. Every
out-neighbour ``k`` of ``c`` (the examiner) scores each of its in-neighbours ``l`` using only what it
sees: its own model, the probe ``z'`` (the run's shared probe set; every examiner uses the same one) and
the neighbours' batch gradients ``g_l^t``. Higher score = more suspect.

All trials of a round come from one batched evaluation: the corrupted run differs from the clean one
at round ``t`` only in ``g_c``, and gossip is linear, so the examiner's ``θ_k^{t+1}`` in trial ``c`` is the
clean ``θ_k^{t+1} − η W[k,c] (g_c^corrupted − g_c)``, exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from dice_repro.apps.corruption import Corruption, corrupt_batches
from dice_repro.engine import Problem, train
from dice_repro.metrics import bootstrap_indices, roc_auc
from dice_repro.trajectory import Run

SCORERS = ("proximal", "proximal_abs", "proximal_at_t", "update_norm", "neg_cosine")
DICE_SCORERS = ("proximal", "proximal_abs", "proximal_at_t")
TRIAL = ["seed", "round", "corrupted"]
SETTING = ["corruption", "batch_size", "lr"]


def score_round(clean: Problem, corrupted: Problem, theta_t: torch.Tensor, t: int, sources: list[int]) -> pd.DataFrame:
    """Every trial of round ``t`` (node ``c ∈ sources`` corrupted): one row per (c, examiner k, in-neighbour l).

    Scorers: ``proximal`` = Definition 4, ``−η W[k,l] ⟨g_l, ∇L(θ_k^{t+1}; z')⟩`` (q = 1; flags harm);
    ``proximal_abs`` = its absolute value (flags the neighbour that stands out either way, the paper's
    visual criterion); ``proximal_at_t`` = the public code's ``⟨∇L(θ_k^t; z'), g_l⟩`` with the sign flipped
    (higher = more harmful); baselines on the same information: ``update_norm`` = ``η ‖g_l‖`` and
    ``neg_cosine`` = ``−cos(g_l, g_k)`` with the examiner's own batch gradient.
    """
    W = clean.W(t)
    eye = torch.eye(clean.nodes, dtype=torch.bool, device=W.device)
    with torch.no_grad():
        g, _ = clean.grads(theta_t, t)
        gc, _ = corrupted.grads(theta_t, t)  # row c: node c's gradient on its corrupted batch
        nxt = clean.gossip(theta_t - clean.lr * g, t)
        edges = (W > 0) & ~eye  # edges[k, l]: k receives from l
        trial_c, trial_k = edges.T.nonzero(as_tuple=True)
        # an examination needs a choice: the examiner has at least two in-neighbours
        chosen = torch.isin(trial_c, torch.tensor(sources, device=W.device)) & (edges.sum(1)[trial_k] >= 2)
        trial_c, trial_k = trial_c[chosen], trial_k[chosen]
        shift = clean.lr * W[trial_k, trial_c].unsqueeze(-1) * (gc[trial_c] - g[trial_c])
        pg_next = clean.probe_grad(nxt[trial_k] - shift)  # ∇L(θ_k^{t+1}) of each trial's examiner
        pg_t = clean.probe_grad(theta_t)
        m, l = edges[trial_k].nonzero(as_tuple=True)  # rows: (trial m, in-neighbour l of its examiner)
        c, k = trial_c[m], trial_k[m]
        hit = l == c
        dot_next = torch.where(hit, (pg_next * gc[trial_c]).sum(-1)[m], (pg_next @ g.T)[m, l])
        dot_t = torch.where(hit, (pg_t @ gc.T)[k, l], (pg_t @ g.T)[k, l])
        norm = torch.where(hit, gc.norm(dim=-1)[l], g.norm(dim=-1)[l])
        cos = torch.where(hit, (gc @ g.T)[l, k], (g @ g.T)[l, k]) / (norm * g.norm(dim=-1)[k])
        scores = {
            "proximal": -clean.lr * W[k, l] * dot_next,
            "proximal_abs": clean.lr * W[k, l] * dot_next.abs(),
            "proximal_at_t": -dot_t,
            "update_norm": clean.lr * norm,
            "neg_cosine": -cos,
        }
    frame = pd.DataFrame({"round": t, "corrupted": c.cpu().numpy(), "examiner": k.cpu().numpy(),
                          "neighbour": l.cpu().numpy(), "weight": W[k, l].cpu().numpy(),
                          "is_corrupted": hit.cpu().numpy()})
    for name in SCORERS:
        frame[name] = scores[name].cpu().numpy()
    return frame


def detection_scores(run: Run, corruptions: list[Corruption], progress: bool | None = None) -> pd.DataFrame:
    """Train the clean run up to the last trial round, then score every trial of every corruption.

    Trials: every round of ``settings.unit_round_list()`` × every node of ``settings.unit_node_list()``;
    the rows carry the run's seed, batch size and learning rate.
    """
    s, p = run.settings, run.problem
    rounds, sources = s.unit_round_list(), s.unit_node_list()
    states = train(p, run.theta0, record=rounds, stop=max(rounds), progress=progress).states
    frames = []
    for corruption in corruptions:
        corrupted = corrupt_batches(p, [(t, c) for t in rounds for c in sources], corruption, seed=s.seed)
        for t in rounds:
            frame = score_round(p, corrupted, states[t], t, sources)
            frames.append(frame.assign(corruption=corruption.label, batch_size=s.batch_size, lr=s.lr, seed=s.seed))
    return pd.concat(frames, ignore_index=True)


def weighted_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC (ties count ½) of ``scores[R]`` for each row of ``weights[N, R]`` (sample multiplicities).

    The same number as :func:`dice_repro.metrics.roc_auc` on the sample that repeats row r ``weights[., r]``
    times, for all bootstrap samples at once (one sort instead of one ranking per sample).
    """
    order = np.argsort(scores, kind="stable")
    s, pos, w = scores[order], labels[order].astype(bool), weights[:, order]
    _, first, inverse = np.unique(s, return_index=True, return_inverse=True)
    last = np.append(first[1:], s.size) - 1
    cum_neg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w * ~pos, axis=1)], axis=1)
    below = cum_neg[:, first]  # negative weight strictly below each tie group
    tied = cum_neg[:, last + 1] - below
    wins = ((below + 0.5 * tied)[:, inverse] * w * pos).sum(1)
    n_pos, n_neg = (w * pos).sum(1), (w * ~pos).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap values."""
    tail = 100 * (1 - level) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def detection_metrics(scores: pd.DataFrame, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per setting and scorer: pooled ROC AUC (corrupted vs clean neighbours), precision at 1 (the corrupted
    neighbour is the examiner's top score) and the mean per-examiner AUC, with bootstrap intervals that
    resample whole trials within each seed (the rows of one trial share its corrupted gradient)."""
    out = []
    for setting, rows in scores.groupby(SETTING, sort=False):
        rows = rows.sort_values(TRIAL + ["examiner", "neighbour"], ignore_index=True)
        trial = rows.groupby(TRIAL, sort=False).ngroup().to_numpy()
        exam = rows.groupby(TRIAL + ["examiner"], sort=False).ngroup().to_numpy()
        exam_trial = np.zeros(exam.max() + 1, dtype=np.int64)
        exam_trial[exam] = trial
        strata = rows.groupby(trial, sort=True)["seed"].first().to_numpy()
        draws = bootstrap_indices(trial.max() + 1, n_boot, strata, seed)
        counts = np.stack([np.bincount(d, minlength=trial.max() + 1) for d in draws])  # [n_boot, trials]
        exams_per_trial = np.bincount(exam_trial).astype(float)
        labels = rows["is_corrupted"].to_numpy(bool)
        degree = rows.groupby(exam).size().to_numpy()
        for scorer in SCORERS:
            values = rows[scorer].to_numpy(np.float64)
            per_exam = _per_examination(values, labels, exam)
            row = dict(zip(SETTING, setting))
            row.update(scorer=scorer, dice=scorer in DICE_SCORERS, auc=roc_auc(values, labels))
            aucs = [weighted_auc(values, labels, counts[i:i + 100, trial]) for i in range(0, n_boot, 100)]  # bounded memory
            row["auc_low"], row["auc_high"] = _interval(np.concatenate(aucs), level)
            for name, per in (("p_at_1", per_exam["top"]), ("auc_examiner", per_exam["auc"])):
                per_trial = np.bincount(exam_trial, weights=per)
                row[name] = float(per.mean())
                row[f"{name}_low"], row[f"{name}_high"] = _interval(counts @ per_trial / (counts @ exams_per_trial), level)
            row.update(chance_p_at_1=float((1 / degree).mean()), trials=int(trial.max() + 1),
                       examinations=int(exam.max() + 1), seeds=int(rows["seed"].nunique()))
            out.append(row)
    return pd.DataFrame(out)


def _per_examination(values: np.ndarray, labels: np.ndarray, exam: np.ndarray) -> dict[str, np.ndarray]:
    """For each examination (one examiner in one trial, one corrupted neighbour): whether the corrupted
    neighbour has the top score, and the examiner's own AUC (ties count ½)."""
    frame = pd.DataFrame({"exam": exam, "value": values, "hit": labels})
    positive = frame[frame["hit"]].set_index("exam")["value"]
    frame["pos_value"] = positive.reindex(frame["exam"]).to_numpy()
    neg = frame[~frame["hit"]]
    wins = ((neg["value"] < neg["pos_value"]) + 0.5 * (neg["value"] == neg["pos_value"])).groupby(neg["exam"]).mean()
    top = frame.loc[frame.groupby("exam")["value"].idxmax(), ["exam", "hit"]].set_index("exam")["hit"]
    index = np.arange(exam.max() + 1)
    return {"top": top.reindex(index).to_numpy(float), "auc": wins.reindex(index).to_numpy(float)}
