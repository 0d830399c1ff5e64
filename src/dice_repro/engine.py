"""All-nodes-at-once ATC decentralized SGD (SPEC §1) on flat, stacked parameters.

Every node's parameters are one row of a tensor ``theta[..., n, P]``; a leading axis in front of
the node axis carries counterfactual replays. One model is evaluated functionally over those
axes (``torch.func.vmap``), a round is one batched gradient, one update and one ``W @ theta``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap
from tqdm.auto import tqdm

from dice_repro.models import build_model
from dice_repro.topology import Topology


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or parameter."""


class FlatModel:
    """A ``nn.Module`` used as a pure function of one flat parameter vector ``[P]``."""

    def __init__(self, module: nn.Module):
        self.module = module
        params = dict(module.named_parameters())
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.numels = [p.numel() for p in params.values()]
        self.size = sum(self.numels)

    def flatten(self, module: nn.Module) -> torch.Tensor:
        """The parameters of ``module`` (same architecture) as one detached vector."""
        return torch.cat([p.detach().reshape(-1) for p in module.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped like the module's parameters."""
        chunks = torch.split(flat, self.numels)
        return {name: c.view(shape) for name, c, shape in zip(self.names, chunks, self.shapes)}

    def logits(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Forward pass of one model (training mode, batch statistics) on a batch."""
        return functional_call(self.module, self.unflatten(flat), (x,))

    def loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Weighted batch loss ``Σ w_i ℓ_i / B``: weight 1 keeps a sample, 0 removes it (SPEC §2)."""
        ce = F.cross_entropy(self.logits(flat, x), y, reduction="none")
        return (ce * w).sum() / ce.shape[0]

    def mean_loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy: the probe loss L(θ; z')."""
        return F.cross_entropy(self.logits(flat, x), y)


def _over_leading(fn: Callable, n_lead: int, shared: tuple[bool, ...]) -> Callable:
    """vmap ``fn`` over ``n_lead`` extra leading axes; arguments flagged shared are broadcast."""
    for _ in range(n_lead):
        fn = vmap(fn, in_dims=tuple(None if s else 0 for s in shared))
    return fn


def _batched(fn: Callable, module: nn.Module, device: torch.device) -> Callable:
    """``fn`` mapped over a leading model axis: ``vmap``, or a plain loop for convolutions on the CPU,
    where vmap's grouped convolutions measured 2× slower than one call per model (benchmarks/engine.py)."""
    if device.type == "cuda" or not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return vmap(fn)

    def looped(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [fn(*(a[i] for a in args)) for i in range(args[0].shape[0])]
        return tuple(torch.stack(o) for o in zip(*outs))

    return looped


def _live_rows(fn: Callable, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Apply a per-model linear map ``fn(theta_rows, v_rows, nodes)`` only where ``v[..., k, :]`` is non-zero.

    A perturbation reaches one node per hop, so early in a cascade most rows are zero: skipping them
    makes the cost one Hessian-vector product per *reached* node.
    """
    n, size = theta.shape
    flat = v.reshape(-1, size)
    nodes = torch.arange(n, device=theta.device).repeat(flat.shape[0] // n)
    live = flat.ne(0).any(-1).nonzero().squeeze(-1)
    out = torch.zeros_like(flat)
    if live.numel():
        out[live] = fn(theta[nodes[live]], flat[live], nodes[live])
    return out.reshape(v.shape)


@dataclass
class Problem:
    """Everything fixed about one decentralized run: model, data, batch schedule, W(t), η."""

    fmodel: FlatModel
    x_train: torch.Tensor
    y_train: torch.Tensor
    schedule: torch.Tensor  # [T, n, B] indices into the training set
    mixing: torch.Tensor  # [period, n, n], W(t) = mixing[t % period]
    lr: float
    x_probe: torch.Tensor
    y_probe: torch.Tensor
    _node_grad: Callable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._node_grad = _batched(grad_and_value(self.fmodel.loss), self.fmodel.module, self.x_train.device)
        self.schedule = self.schedule.to(self.x_train.device)
        self.mixing = self.mixing.to(device=self.x_train.device, dtype=self.x_train.dtype)

    @property
    def rounds(self) -> int:
        return self.schedule.shape[0]

    @property
    def nodes(self) -> int:
        return self.schedule.shape[1]

    @property
    def batch_size(self) -> int:
        return self.schedule.shape[2]

    def W(self, t: int) -> torch.Tensor:
        """The mixing matrix used at round ``t``."""
        return self.mixing[t % self.mixing.shape[0]]

    def batch(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every node's mini-batch at round ``t``: ``X[n, B, ...]``, ``Y[n, B]``."""
        idx = self.schedule[t]
        return self.x_train[idx], self.y_train[idx]

    def ones(self) -> torch.Tensor:
        """Sample weights of the factual run: every sample kept."""
        return torch.ones(self.schedule.shape[1:], dtype=self.x_train.dtype, device=self.x_train.device)

    def grads(self, theta: torch.Tensor, t: int, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch gradients and losses of every node at round ``t`` for ``theta[..., n, P]``."""
        lead = theta.shape[:-2]
        weights = (self.ones() if weights is None else weights).expand(*lead, *self.schedule.shape[1:])
        idx = self.schedule[t].expand(*lead, *self.schedule.shape[1:]).reshape(-1, self.batch_size)
        g, loss = self._node_grad(theta.reshape(-1, theta.shape[-1]), self.x_train[idx], self.y_train[idx],
                                  weights.reshape(-1, self.batch_size))
        return g.reshape(theta.shape), loss.reshape(theta.shape[:-1])

    def gossip(self, theta_half: torch.Tensor, t: int) -> torch.Tensor:
        """``θ^{t+1} = W^t θ^{t+½}`` for every node (and every replay) at once."""
        return torch.matmul(self.W(t), theta_half)

    def step(self, theta: torch.Tensor, t: int, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One ATC round: returns ``(θ^{t+½}, θ^{t+1}, batch losses)``."""
        g, loss = self.grads(theta, t, weights)
        half = torch.add(theta, g, alpha=-self.lr)
        return half, self.gossip(half, t), loss

    def probe_loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Probe loss ``L(θ_k; z')`` of every model in ``theta[..., P]``."""
        fn = _over_leading(self.fmodel.mean_loss, theta.dim() - 1, (False, True, True))
        return fn(theta, self.x_probe, self.y_probe)

    def probe_grad(self, theta: torch.Tensor) -> torch.Tensor:
        """``∇L(θ_k; z')`` of every model in ``theta[..., P]``."""
        fn = _over_leading(grad(self.fmodel.mean_loss), theta.dim() - 1, (False, True, True))
        return fn(theta, self.x_probe, self.y_probe)

    def probe_hvp(self, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``∇²L(θ_k; z') v_k``: ``theta[n, P]`` (factual), ``v[..., n, P]`` (forward-over-reverse)."""

        def one(p: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
            return jvp(lambda q: grad(self.fmodel.mean_loss)(q, self.x_probe, self.y_probe), (p,), (vec,))[1]

        return _live_rows(lambda rows, vec, nodes: vmap(one)(rows, vec), theta, v)

    def node_grads(self, theta_rows: torch.Tensor, nodes: torch.Tensor, t: int, weights: torch.Tensor) -> torch.Tensor:
        """Weighted batch gradients of single models ``theta_rows[M, P]`` on the round-t batches of ``nodes[M]``.

        With ``weights`` = the indicator of removed samples this is ``(1/B) Σ_{i∈S} ∇ℓ(θ; z_i)`` for
        every unit at once: per-sample (and per-subset) gradients without a Python loop.
        """
        idx = self.schedule[t][nodes]
        return self._node_grad(theta_rows, self.x_train[idx], self.y_train[idx], weights)[0]

    def node_hvp(self, theta_rows: torch.Tensor, v: torch.Tensor, nodes: torch.Tensor, t: int) -> torch.Tensor:
        """``H v`` for single models ``theta_rows[M, P]``, H = Hessian of node ``nodes[m]``'s round-t batch loss."""
        idx = self.schedule[t][nodes]
        w = torch.ones(idx.shape, dtype=theta_rows.dtype, device=theta_rows.device)

        def one(p: torch.Tensor, vec: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
            return jvp(lambda q: grad(self.fmodel.loss)(q, xb, yb, wb), (p,), (vec,))[1]

        return vmap(one)(theta_rows, v, self.x_train[idx], self.y_train[idx], w)

    def batch_hvp(self, theta: torch.Tensor, v: torch.Tensor, t: int) -> torch.Tensor:
        """``H_k^t v_k`` for every node k and every replay: ``theta[n, P]`` (factual), ``v[..., n, P]``."""
        return _live_rows(lambda rows, vec, nodes: self.node_hvp(rows, vec, nodes, t), theta, v)

    def accuracy(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Accuracy of every node's model on ``(x, y)``: ``[n]``."""
        logits = vmap(self.fmodel.logits, in_dims=(0, None))(theta, x)
        return (logits.argmax(-1) == y).to(theta.dtype).mean(-1)


def check_finite(theta: torch.Tensor, loss: torch.Tensor, t: int) -> None:
    """Stop a diverged run, naming the first node whose loss (else parameters) went non-finite, and the round."""
    if bool(torch.isfinite(loss).all()) and bool(torch.isfinite(theta.sum(-1)).all()):
        return  # the cheap check; the loop below only runs to name the culprit
    for what, bad in (("loss", ~torch.isfinite(loss)), ("parameter vector", ~torch.isfinite(theta).all(dim=-1))):
        bad = bad.reshape(-1, bad.shape[-1]).any(0)
        if bool(bad.any()):
            node = int(bad.nonzero()[0])
            raise DivergenceError(
                f"training diverged at round {t}: node {node} has a non-finite {what}; "
                "lower the learning rate (lr) or check the data normalisation"
            )


def init_params(
    model_name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    nodes: int,
    mode: str,
    seed: int,
) -> tuple[FlatModel, torch.Tensor]:
    """A functional template and initial parameters ``[n, P]``.

    ``per_node``: node k is initialised from seed ``seed + k`` (the public code's protocol);
    ``common``: every node starts from the model of ``seed``.
    """
    if mode not in ("per_node", "common"):
        raise ValueError(f"unknown init mode {mode!r}; choose 'per_node' or 'common'")
    torch.manual_seed(seed)
    template = build_model(model_name, input_shape, num_classes)
    fmodel = FlatModel(template)
    rows = []
    for k in range(nodes):
        if mode == "common":
            rows.append(fmodel.flatten(template))
            continue
        torch.manual_seed(seed + k)
        rows.append(fmodel.flatten(build_model(model_name, input_shape, num_classes)))
    return fmodel, torch.stack(rows)


@dataclass
class TrainResult:
    """What a factual run leaves behind for replays, estimates and curves."""

    states: dict[int, torch.Tensor]  # θ^t of every node at the recorded rounds
    final: torch.Tensor  # θ^T
    train_loss: torch.Tensor  # [T, n] batch loss of each node at each round
    probe_loss: torch.Tensor  # [T + 1, n] probe loss of θ^t, t = 0..T


def train(
    problem: Problem,
    theta0: torch.Tensor,
    record: Iterable[int] = (),
    start: int = 0,
    stop: int | None = None,
    progress: bool | None = None,
    on_round: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> TrainResult:
    """Run the factual trajectory from round ``start`` to ``stop``, recording ``θ^t`` for ``t ∈ record``."""
    stop = problem.rounds if stop is None else stop
    wanted = set(record)
    states: dict[int, torch.Tensor] = {}
    losses, probes = [], [problem.probe_loss(theta0)]
    theta = theta0
    bar = tqdm(range(start, stop), desc="train", unit="round", disable=None if progress is None else not progress, leave=False)
    with torch.no_grad():
        for t in bar:
            if t in wanted:
                states[t] = theta.clone()
            _, theta, loss = problem.step(theta, t)
            check_finite(theta, loss, t)
            losses.append(loss)
            probes.append(problem.probe_loss(theta))
            if on_round is not None:
                on_round(t, loss, probes[-1])
    if stop in wanted:
        states[stop] = theta.clone()
    empty = theta0.new_zeros((0, problem.nodes))
    return TrainResult(
        states=states,
        final=theta,
        train_loss=torch.stack(losses) if losses else empty,
        probe_loss=torch.stack(probes),
    )


def auto_device(name: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
