"""Gossip topologies: mixing matrices, their validation, properties and drawings.

Convention (SPEC §1, §5): a mixing matrix ``W`` is n×n, non-negative and row-stochastic;
``W[k, l] > 0`` means node ``k`` RECEIVES from node ``l``. Edges therefore point
``l → k`` whenever ``W[k, l] > 0``, and hop distances follow that direction.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import shortest_path

__all__ = [
    "TOPOLOGY_NAMES",
    "Topology",
    "TopologyError",
    "draw",
    "load_matrix",
    "make_topology",
    "properties",
    "validate_matrix",
]

TOPOLOGY_NAMES: tuple[str, ...] = (
    "ring",
    "exponential",
    "grid",
    "torus",
    "one_peer_exponential",
    "complete",
    "star",
    "hub16",
    "erdos_renyi",
)

_FILE_NAME = "file"
_MATRIX_SUFFIXES = (".npy", ".csv")
_ER_MAX_TRIES = 100

# hub16 (the public code's "special0"), SPEC §5: receiver -> {sender: weight}.
_HUB16: dict[int, dict[int, float]] = {
    0: {0: 0.8, 1: 0.1, 12: 0.1},
    1: {0: 0.3, 1: 0.7},
    2: {2: 0.6, 3: 0.2, 4: 0.1, 14: 0.1},
    3: {2: 0.1, 3: 0.7, 5: 0.2},
    4: {2: 0.2, 4: 0.7, 5: 0.1},
    5: {0: 0.3, 4: 0.1, 5: 0.6},
    6: {6: 0.7, 9: 0.1, 11: 0.2},
    7: {7: 0.7, 8: 0.2, 10: 0.1},
    8: {7: 0.1, 8: 0.8, 9: 0.1},
    9: {1: 0.1, 8: 0.1, 9: 0.6, 10: 0.1, 11: 0.1},
    10: {0: 0.1, 7: 0.1, 10: 0.6, 12: 0.2},
    11: {6: 0.3, 9: 0.2, 11: 0.5},
    12: {0: 0.2, 10: 0.3, 12: 0.5},
    13: {6: 0.1, 13: 0.7, 15: 0.2},
    14: {13: 0.1, 14: 0.8, 15: 0.1},
    15: {1: 0.2, 13: 0.1, 14: 0.1, 15: 0.6},
}


class TopologyError(ValueError):
    """A topology or mixing matrix is invalid; the message says what and how to fix it."""


@dataclass(frozen=True, eq=False)
class Topology:
    """A named gossip topology: one mixing matrix, or a period of time-varying ones.

    Matrices are validated on construction (square, finite, non-negative, row-stochastic)
    and stored as read-only float64 arrays, so a Topology can be shared between
    simulations without being mutated. Strong connectivity is NOT required here: the
    paper's hub16 is not strongly connected (nodes 2-5 and 13-15 never send back to the
    rest), so it is reported by ``properties`` instead; user files are held to it by
    ``validate_matrix``. Equality is identity (``eq=False``) because element-wise array
    comparison has no single truth value.
    """

    name: str
    n: int
    matrices: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise TopologyError(
                f"topology {self.name!r}: n must be a positive integer, got {self.n!r}"
            )
        if len(self.matrices) == 0:
            raise TopologyError(
                f"topology {self.name!r}: needs at least one mixing matrix, got none"
            )
        frozen: list[np.ndarray] = []
        for t, w in enumerate(self.matrices):
            source = f"topology {self.name!r} (matrix t={t})"
            arr = _validate(w, source, atol=1e-6, require_connected=False)
            if arr.shape != (self.n, self.n):
                raise TopologyError(
                    f"{source}: shape {arr.shape} does not match n={self.n}; "
                    f"every matrix must be {self.n}x{self.n}"
                )
            arr = arr.copy()
            arr.setflags(write=False)
            frozen.append(arr)
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "matrices", tuple(frozen))

    def matrix(self, t: int) -> np.ndarray:
        """Mixing matrix used at round ``t`` (periodic for time-varying topologies)."""
        return self.matrices[t % len(self.matrices)]

    @property
    def is_static(self) -> bool:
        """True when the same matrix is used at every round."""
        return len(self.matrices) == 1

    def union(self) -> np.ndarray:
        """Mean of the period's matrices: its support is every edge used in a period."""
        if self.is_static:
            return self.matrices[0]
        return np.mean(np.stack(self.matrices), axis=0)

    def hop_distances(self) -> np.ndarray:
        """D[j, k] = fewest hops for data at node j to reach node k (-1 if never)."""
        return _hop_distances(self.union())

    def out_neighbors(self, j: int) -> list[int]:
        """Nodes k != j that receive from node j (W[k, j] > 0 in the union)."""
        col = self.union()[:, j]
        return [int(k) for k in np.flatnonzero(col > 0) if k != j]

    def in_neighbors(self, k: int) -> list[int]:
        """Nodes l != k that node k receives from (W[k, l] > 0 in the union)."""
        row = self.union()[k, :]
        return [int(j) for j in np.flatnonzero(row > 0) if j != k]


# ---------------------------------------------------------------------------- validation


def validate_matrix(W: Any, source: str = "matrix", atol: float = 1e-6) -> np.ndarray:
    """Check that ``W`` is a usable mixing matrix and return it as float64.

    Checks, in order: square 2-D, finite, non-negative, rows sum to 1 within ``atol``,
    strongly connected. Each failure raises TopologyError naming ``source``.
    """
    return _validate(W, source, atol, require_connected=True)


def _validate(W: Any, source: str, atol: float, require_connected: bool) -> np.ndarray:
    """validate_matrix, with the connectivity check optional (the built-in hub16 and the
    per-round matrices of one_peer_exponential are not strongly connected)."""
    try:
        arr = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TopologyError(
            f"{source}: cannot be read as a numeric matrix ({exc}); "
            "provide an n x n array of numbers"
        ) from exc
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise TopologyError(
            f"{source}: mixing matrix must be square 2-D (n x n), got shape {arr.shape}; "
            "provide one row and one column per node"
        )
    if arr.shape[0] == 0:
        raise TopologyError(f"{source}: mixing matrix is empty (0 x 0); it needs at least one node")
    bad = np.argwhere(~np.isfinite(arr))
    if bad.size:
        r, c = (int(x) for x in bad[0])
        raise TopologyError(
            f"{source}: entry ({r}, {c}) is {arr[r, c]}, and all entries must be finite; "
            f"{len(bad)} non-finite entr{'y' if len(bad) == 1 else 'ies'} in total"
        )
    bad = np.argwhere(arr < 0)
    if bad.size:
        r, c = (int(x) for x in bad[0])
        raise TopologyError(
            f"{source}: entry ({r}, {c}) = {arr[r, c]:g} is negative; mixing weights must be "
            f">= 0 ({len(bad)} negative entr{'y' if len(bad) == 1 else 'ies'} in total)"
        )
    sums = arr.sum(axis=1)
    bad_rows = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad_rows.size:
        r = int(bad_rows[0])
        raise TopologyError(
            f"{source}: row {r} sums to {sums[r]:.6g}, but every row must sum to 1 "
            f"(tolerance {atol:g}); row k holds the weights node k gives what it receives, "
            f"so divide each row by its sum ({bad_rows.size} bad row(s) in total)"
        )
    if require_connected:
        _check_strongly_connected(arr, source)
    return arr


def _reachable(adj: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of nodes reachable from ``start`` along adj[u, v] (edge u → v)."""
    seen = np.zeros(adj.shape[0], dtype=bool)
    seen[start] = True
    queue = deque([start])
    while queue:
        u = queue.popleft()
        for v in np.flatnonzero(adj[u] & ~seen):
            seen[v] = True
            queue.append(int(v))
    return seen


def _check_strongly_connected(W: np.ndarray, source: str) -> None:
    """Raise TopologyError naming the nodes that node 0 cannot reach or be reached from."""
    adj = W.T > 0  # adj[j, k]: data flows j → k because k receives from j
    not_from0 = np.flatnonzero(~_reachable(adj, 0)).tolist()
    not_to0 = np.flatnonzero(~_reachable(adj.T, 0)).tolist()
    if not_from0 or not_to0:
        parts = []
        if not_from0:
            parts.append(f"nodes {not_from0} cannot be reached from node 0")
        if not_to0:
            parts.append(f"nodes {not_to0} cannot reach node 0")
        raise TopologyError(
            f"{source}: graph is not strongly connected: {'; '.join(parts)} "
            "(edge l -> k exists when W[k, l] > 0); add non-zero weights linking them"
        )


def load_matrix(path: str | Path) -> np.ndarray:
    """Read a user mixing matrix from .npy or .csv (comma separated, no header)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _MATRIX_SUFFIXES:
        raise TopologyError(
            f"matrix file {str(p)!r}: unsupported extension {p.suffix or '(none)'!r}; "
            f"use one of {list(_MATRIX_SUFFIXES)}"
        )
    if not p.is_file():
        raise TopologyError(f"matrix file {str(p)!r} does not exist; check the path")
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        return np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
    except (ValueError, OSError) as exc:
        raise TopologyError(
            f"matrix file {str(p)!r} could not be read ({exc}); a .npy must hold a numeric "
            "array, a .csv comma-separated numbers with no header"
        ) from exc


# -------------------------------------------------------------------------- constructions


def _grid_shape(n: int) -> tuple[int, int]:
    """(rows, cols) with rows the largest divisor of n not above sqrt(n)."""
    r = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return r, n // r


def _metropolis_hastings(adj: np.ndarray) -> np.ndarray:
    """Symmetric doubly stochastic weights 1/max(d_i+1, d_j+1) on a symmetric graph."""
    adj = adj.astype(bool) & ~np.eye(adj.shape[0], dtype=bool)
    deg = adj.sum(axis=1)
    W = np.where(adj, 1.0 / np.maximum.outer(deg + 1, deg + 1), 0.0)
    W[np.diag_indices_from(W)] = 1.0 - W.sum(axis=1)
    return W


def _grid_adjacency(n: int, wrap: bool) -> np.ndarray:
    """Adjacency of the rows x cols grid (torus when ``wrap``), neighbours as a set."""
    rows, cols = _grid_shape(n)
    adj = np.zeros((n, n), dtype=bool)
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                rr, cc = r + dr, c + dc
                if wrap:
                    rr, cc = rr % rows, cc % cols
                elif not (0 <= rr < rows and 0 <= cc < cols):
                    continue
                j = rr * cols + cc
                if j != i:
                    adj[i, j] = True
    return adj


def _ring(n: int) -> np.ndarray:
    if n <= 2:
        return np.full((n, n), 1.0 / n)
    W = np.zeros((n, n))
    for i in range(n):
        for j in (i - 1, i, i + 1):
            W[i, j % n] = 1.0 / 3.0
    return W


def _exponential(n: int) -> np.ndarray:
    offsets = [0] + [2**p for p in range(n.bit_length()) if 2**p < n]
    W = np.zeros((n, n))
    for i in range(n):
        for off in offsets:
            W[i, (i + off) % n] = 1.0 / len(offsets)
    return W


def _one_peer_exponential(n: int) -> tuple[np.ndarray, ...]:
    if n < 2 or n & (n - 1):
        lower = 1 << (n.bit_length() - 1)
        hint = " or ".join(str(m) for m in (lower, 2 * lower) if m >= 2)
        raise TopologyError(
            f"one_peer_exponential needs n a power of two >= 2, got n={n}; use n={hint}"
        )
    eye = np.eye(n)
    return tuple(
        (eye + np.roll(eye, 2**p, axis=1)) / 2.0  # row i has its 1 at column i + 2^p
        for p in range(int(math.log2(n)))
    )


def _star(n: int) -> np.ndarray:
    W = np.eye(n) * (1.0 - 1.0 / n)
    W[0, :] = 1.0 / n
    W[1:, 0] = 1.0 / n
    return W


def _hub16(n: int) -> np.ndarray:
    if n != 16:
        raise TopologyError(f"hub16 is a fixed 16-node table; only n=16 is allowed, got n={n}")
    W = np.zeros((16, 16))
    for k, row in _HUB16.items():
        for l, w in row.items():
            W[k, l] = w
    return W


def _erdos_renyi(n: int, p: float, seed: int) -> np.ndarray:
    if not 0.0 < p <= 1.0:
        raise TopologyError(f"erdos_renyi edge probability p must be in (0, 1], got p={p}")
    for attempt in range(_ER_MAX_TRIES):
        rng = np.random.Generator(np.random.PCG64(seed + attempt))
        upper = np.triu(rng.random((n, n)) < p, k=1)
        adj = upper | upper.T
        if _reachable(adj, 0).all():
            return _metropolis_hastings(adj)
    raise TopologyError(
        f"erdos_renyi(n={n}, p={p}) was not connected for seeds "
        f"{seed}..{seed + _ER_MAX_TRIES - 1}; increase p (above "
        f"ln(n)/n = {math.log(max(n, 2)) / n:.3f} is usually enough)"
    )


def make_topology(
    name: str,
    n: int | None,
    *,
    seed: int = 0,
    p: float = 0.3,
    path: str | Path | None = None,
) -> Topology:
    """Build a named topology with ``n`` nodes (SPEC §5), or load one with name="file".

    ``seed`` and ``p`` are used by erdos_renyi only; ``path`` by "file", where n=0 or
    None takes n from the file.
    """
    allowed = list(TOPOLOGY_NAMES) + [_FILE_NAME]
    if name not in allowed:
        raise TopologyError(f"unknown topology {name!r}; choose one of {allowed}")
    if name == _FILE_NAME:
        if path is None:
            raise TopologyError('topology "file" needs path=<matrix .npy or .csv>')
        W = validate_matrix(load_matrix(path), source=f"matrix file {str(path)!r}")
        if n and n != W.shape[0]:
            raise TopologyError(
                f"matrix file {str(path)!r} has {W.shape[0]} nodes but n={n} was requested; "
                f"set n={W.shape[0]} (or 0 to take it from the file)"
            )
        return Topology(_FILE_NAME, W.shape[0], (W,))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise TopologyError(f"topology {name!r}: n must be a positive integer, got n={n!r}")
    n = int(n)
    if name == "one_peer_exponential":
        return Topology(name, n, _one_peer_exponential(n))
    builders = {
        "ring": lambda: _ring(n),
        "exponential": lambda: _exponential(n),
        "grid": lambda: _metropolis_hastings(_grid_adjacency(n, wrap=False)),
        "torus": lambda: _metropolis_hastings(_grid_adjacency(n, wrap=True)),
        "complete": lambda: np.full((n, n), 1.0 / n),
        "star": lambda: _star(n),
        "hub16": lambda: _hub16(n),
        "erdos_renyi": lambda: _erdos_renyi(n, p, seed),
    }
    return Topology(name, n, (builders[name](),))


# ------------------------------------------------------------------------- properties


def _hop_distances(W: np.ndarray) -> np.ndarray:
    """Unweighted shortest paths along j → k when W[k, j] > 0; -1 where unreachable."""
    adj = (W.T > 0).astype(np.float64)
    np.fill_diagonal(adj, 0.0)
    dist = shortest_path(adj, method="D", directed=True, unweighted=True)
    return np.where(np.isfinite(dist), dist, -1).astype(np.int64)


def _lambda2(W: np.ndarray) -> float:
    """Second-largest eigenvalue modulus (0 for a single node)."""
    if W.shape[0] < 2:
        return 0.0
    moduli = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    return float(moduli[1])


def properties(top: Topology, atol: float = 1e-6) -> dict[str, Any]:
    """Summary numbers of a topology (JSON serialisable), for reports and checks.

    ``diameter`` is the longest finite hop distance (unreachable pairs are skipped;
    ``strongly_connected`` says whether there are any), degrees exclude self loops and
    are taken on the union for time-varying topologies.
    """
    mats = top.matrices
    rows_ok = all(np.allclose(w.sum(axis=1), 1.0, atol=atol) for w in mats)
    cols_ok = all(np.allclose(w.sum(axis=0), 1.0, atol=atol) for w in mats)
    union = top.union()
    off = (union > 0) & ~np.eye(top.n, dtype=bool)
    hops = top.hop_distances()
    return {
        "name": top.name,
        "n": top.n,
        "static": top.is_static,
        "row_sums_ok": bool(rows_ok),
        "col_sums_ok": bool(cols_ok),
        "doubly_stochastic": bool(rows_ok and cols_ok),
        "symmetric": bool(all(np.allclose(w, w.T, atol=atol) for w in mats)),
        "lambda2": _lambda2(top.matrix(0) if top.is_static else union),
        "strongly_connected": bool((hops >= 0).all()),
        "diameter": int(hops.max()),
        "max_in_degree": int(off.sum(axis=1).max()),
        "max_out_degree": int(off.sum(axis=0).max()),
        "edges": int(off.sum()),
    }


# ---------------------------------------------------------------------------- drawing

_CIRCULAR = {"ring", "exponential", "complete", "one_peer_exponential", "star", "erdos_renyi"}


def draw(
    top: Topology,
    path: str | Path | None,
    node_values: np.ndarray | None = None,
    ax: Any = None,
) -> None:
    """Draw the directed gossip graph (union over the period) and save it to ``path``.

    Edges point from sender to receiver with width proportional to the weight. With
    ``node_values`` (e.g. an influence cascade), node size is proportional to |value|
    (with a small floor so zero-valued nodes stay visible) and colour shows the sign.
    When ``ax`` is given the drawing goes there and nothing is saved; otherwise a new
    figure (no pyplot state) is saved to ``path``, format from the extension.
    """
    import networkx as nx
    from matplotlib.figure import Figure

    if ax is None and path is None:
        raise TopologyError("draw: give a path to save to, or an ax to draw into")
    W = top.union()
    graph = nx.DiGraph()
    graph.add_nodes_from(range(top.n))
    for k, j in zip(*np.nonzero(W)):
        if k != j:
            graph.add_edge(int(j), int(k), weight=float(W[k, j]))

    if top.name in _CIRCULAR:
        pos = nx.circular_layout(graph)
    elif top.name in ("grid", "torus"):
        _, cols = _grid_shape(top.n)
        pos = {i: (float(i % cols), -float(i // cols)) for i in range(top.n)}
    else:
        pos = nx.spring_layout(graph, seed=0)

    if node_values is None:
        sizes: Any = 300.0
        colors: Any = "#9ecae1"
        peak = None
    else:
        vals = np.asarray(node_values, dtype=np.float64).reshape(-1)
        if vals.shape[0] != top.n:
            raise TopologyError(
                f"draw: node_values has {vals.shape[0]} entries but the topology has {top.n} nodes"
            )
        peak = float(np.abs(vals).max()) or 1.0
        sizes = np.maximum(1200.0 * np.abs(vals) / peak, 40.0)  # floor keeps zeros visible
        colors = vals

    fig = None
    if ax is None:
        fig = Figure(figsize=(6, 6))
        ax = fig.add_subplot()
    nx.draw_networkx_nodes(
        graph, pos, ax=ax, node_size=sizes, node_color=colors, edgecolors="black",
        linewidths=0.5, cmap=None if peak is None else "coolwarm",
        vmin=None if peak is None else -peak, vmax=peak,
    )
    nx.draw_networkx_labels(graph, pos, ax=ax, font_size=8)
    widths = [3.0 * d["weight"] for _, _, d in graph.edges(data=True)]
    nx.draw_networkx_edges(
        graph, pos, ax=ax, width=widths, node_size=sizes, arrows=True, arrowstyle="-|>",
        arrowsize=8, connectionstyle="arc3,rad=0.1", edge_color="0.4",
    )
    ax.set_title(f"{top.name} (n={top.n})")
    ax.set_axis_off()
    if fig is not None:
        fig.savefig(path, bbox_inches="tight", dpi=150)
