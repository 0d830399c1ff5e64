"""Tests for dice_repro.topology against SPEC §5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dice_repro.topology import (
    TOPOLOGY_NAMES,
    Topology,
    TopologyError,
    draw,
    load_matrix,
    make_topology,
    properties,
    validate_matrix,
)

CASES = [(name, n) for name in TOPOLOGY_NAMES for n in (16, 32) if (name, n) != ("hub16", 32)]


@pytest.mark.parametrize(("name", "n"), CASES)
def test_non_negative_and_row_stochastic(name: str, n: int) -> None:
    top = make_topology(name, n)
    assert top.n == n
    for W in top.matrices:
        assert W.shape == (n, n) and W.dtype == np.float64
        assert (W >= 0).all()
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(("name", "n"), [c for c in CASES if c[0] != "hub16"])
def test_doubly_stochastic_where_spec_says(name: str, n: int) -> None:
    top = make_topology(name, n)
    for W in top.matrices:
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)
    assert properties(top)["doubly_stochastic"]


def test_hub16_row_but_not_column_stochastic() -> None:
    top = make_topology("hub16", 16)
    cols = top.matrix(0).sum(axis=0)
    assert cols[0] == pytest.approx(1.7)
    assert cols.min() == pytest.approx(0.8)
    props = properties(top)
    assert props["row_sums_ok"] and not props["col_sums_ok"] and not props["doubly_stochastic"]


def test_hub16_only_16_nodes() -> None:
    with pytest.raises(TopologyError, match="only n=16"):
        make_topology("hub16", 32)


def test_hub16_sink_component_is_reported_not_rejected() -> None:
    top = make_topology("hub16", 16)
    D = top.hop_distances()
    assert (D[0] >= 0).all()  # the dominant node reaches everyone
    assert D[2, 0] == -1  # nodes 2-5, 13-15 never send back
    assert properties(top)["strongly_connected"] is False


@pytest.mark.parametrize(
    ("name", "n", "expected"),
    [
        ("ring", 16, 0.9493),
        ("ring", 32, 0.9872),
        ("exponential", 16, 0.6000),
        ("exponential", 32, 0.6667),
        ("grid", 16, 0.8686),
        ("grid", 32, 0.9658),
        ("hub16", 16, 0.9378),
        ("complete", 16, 0.0),
        ("complete", 32, 0.0),
    ],
)
def test_lambda2_matches_spec(name: str, n: int, expected: float) -> None:
    assert properties(make_topology(name, n))["lambda2"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(("n", "k"), [(16, 5), (32, 6)])
def test_exponential_entries(n: int, k: int) -> None:
    W = make_topology("exponential", n).matrix(0)
    for row in W:
        nz = row[row > 0]
        assert len(nz) == k
        np.testing.assert_allclose(nz, 1.0 / k)
    # node 0 receives from 0 + 2^p
    assert make_topology("exponential", 16).in_neighbors(0) == [1, 2, 4, 8]


def test_ring_small_cases() -> None:
    np.testing.assert_array_equal(make_topology("ring", 1).matrix(0), [[1.0]])
    np.testing.assert_allclose(make_topology("ring", 2).matrix(0), 0.5)


def test_grid_has_no_wrap_around() -> None:
    top = make_topology("grid", 16)
    assert top.out_neighbors(0) == [1, 4]
    assert top.in_neighbors(0) == [1, 4]
    W = top.matrix(0)
    assert W[0, 1] == pytest.approx(1 / 4)  # max(d0+1, d1+1) = max(3, 4)
    assert W[0, 0] == pytest.approx(1 - 2 / 4)
    assert len(make_topology("grid", 32).out_neighbors(0)) == 2


def test_torus_wraps_and_uses_neighbour_set() -> None:
    assert make_topology("torus", 16).out_neighbors(0) == [1, 3, 4, 12]
    W = make_topology("torus", 4).matrix(0)  # 2x2: up == down, left == right
    assert [int((row > 0).sum()) for row in W] == [3, 3, 3, 3]
    np.testing.assert_allclose(W.sum(axis=0), 1.0)


def test_star() -> None:
    W = make_topology("star", 16).matrix(0)
    np.testing.assert_allclose(W[0], 1 / 16)
    assert W[5, 0] == pytest.approx(1 / 16) and W[5, 5] == pytest.approx(15 / 16)


def test_one_peer_exponential_varies_and_is_doubly_stochastic() -> None:
    top = make_topology("one_peer_exponential", 16)
    assert not top.is_static and len(top.matrices) == 4
    for t in range(4):
        W = top.matrix(t)
        assert W[0, 2**t] == pytest.approx(0.5) and W[0, 0] == pytest.approx(0.5)
        np.testing.assert_allclose(W.sum(axis=0), 1.0)
        np.testing.assert_allclose(W.sum(axis=1), 1.0)
    assert not np.array_equal(top.matrix(0), top.matrix(1))
    assert top.matrix(4) is top.matrix(0)
    assert top.hop_distances().max() == 4  # union = static exponential graph


@pytest.mark.parametrize("n", [1, 12, 24])
def test_one_peer_exponential_rejects_non_power_of_two(n: int) -> None:
    with pytest.raises(TopologyError, match="power of two"):
        make_topology("one_peer_exponential", n)


def test_erdos_renyi_seeded_and_connected() -> None:
    a = make_topology("erdos_renyi", 16, seed=3)
    b = make_topology("erdos_renyi", 16, seed=3)
    c = make_topology("erdos_renyi", 16, seed=4)
    np.testing.assert_array_equal(a.matrix(0), b.matrix(0))
    assert not np.array_equal(a.matrix(0), c.matrix(0))
    sparse = make_topology("erdos_renyi", 32, seed=0, p=0.1)
    assert (sparse.hop_distances() >= 0).all()
    np.testing.assert_allclose(sparse.matrix(0), sparse.matrix(0).T)


def test_erdos_renyi_gives_up_with_clear_error() -> None:
    with pytest.raises(TopologyError, match="not connected.*increase p"):
        make_topology("erdos_renyi", 32, p=0.001)


def test_hop_distances() -> None:
    D = make_topology("ring", 16).hop_distances()
    assert D[0, 8] == 8 and D[0, 1] == 1 and D[0, 15] == 1 and D[3, 3] == 0
    assert D.dtype.kind == "i"
    E = make_topology("exponential", 16)
    DE = E.hop_distances()
    assert DE[0, 0] == 0
    assert sorted(E.out_neighbors(0)) == [8, 12, 14, 15]  # k receives from k + 2^p
    assert DE[0, 15] == 1 and DE[0, 1] == 4  # reaching 0 + 1 needs 15 = 8 + 4 + 2 + 1 steps back
    assert DE.max() == 4


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(TopologyError, match="unknown topology 'hypercube'.*ring.*file"):
        make_topology("hypercube", 16)


def test_topology_is_read_only() -> None:
    W = make_topology("ring", 8).matrix(0)
    with pytest.raises(ValueError):
        W[0, 0] = 2.0


# ------------------------------------------------------------------ user matrices


def _write(tmp_path: Path, W: np.ndarray, ext: str) -> Path:
    path = tmp_path / f"W{ext}"
    if ext == ".npy":
        np.save(path, W)
    else:
        np.savetxt(path, W, delimiter=",")
    return path


@pytest.mark.parametrize("ext", [".npy", ".csv"])
def test_file_topology_round_trip(tmp_path: Path, ext: str) -> None:
    W = make_topology("ring", 6).matrix(0)
    path = _write(tmp_path, W, ext)
    for n in (6, 0, None):
        top = make_topology("file", n, path=str(path))
        assert top.n == 6
        np.testing.assert_allclose(top.matrix(0), W)
    with pytest.raises(TopologyError, match="has 6 nodes but n=8"):
        make_topology("file", 8, path=str(path))


RING = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])


def _bad(row: int, col: int, value: float) -> np.ndarray:
    W = RING.copy()
    W[row, col] = value
    return W


@pytest.mark.parametrize("ext", [".npy", ".csv"])
@pytest.mark.parametrize(
    ("W", "pattern"),
    [
        (np.full((2, 3), 1 / 3), r"square.*shape \(2, 3\)"),
        (_bad(1, 2, np.nan), r"entry \(1, 2\) is nan.*finite"),
        (_bad(2, 0, -0.5), r"entry \(2, 0\) = -0.5 is negative"),
        (_bad(1, 1, 0.4), r"row 1 sums to 0.9"),
        (
            np.array([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]]),
            r"not strongly connected: nodes \[2\] cannot be reached from node 0; "
            r"nodes \[1, 2\] cannot reach node 0",
        ),
    ],
)
def test_invalid_user_matrix(tmp_path: Path, ext: str, W: np.ndarray, pattern: str) -> None:
    path = _write(tmp_path, W, ext)
    with pytest.raises(TopologyError, match=pattern) as err:
        make_topology("file", 0, path=str(path))
    assert str(path) in str(err.value)


def test_validate_matrix_checks_in_order_and_names_source() -> None:
    both = _bad(0, 0, -0.5)
    both[1, 1] = np.inf  # non-finite is reported before negative
    with pytest.raises(TopologyError, match=r"^mine: entry \(1, 1\) is inf"):
        validate_matrix(both, source="mine")
    with pytest.raises(TopologyError, match="square"):
        validate_matrix(np.ones(3))
    out = validate_matrix(RING.astype(np.float32))
    assert out.dtype == np.float64
    validate_matrix(_bad(1, 1, 0.5 + 1e-8))  # within atol


def test_load_matrix_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="does not exist"):
        load_matrix(tmp_path / "nope.npy")
    (tmp_path / "W.txt").write_text("1\n")
    with pytest.raises(TopologyError, match=r"unsupported extension '\.txt'.*\.npy.*\.csv"):
        load_matrix(tmp_path / "W.txt")
    (tmp_path / "W.csv").write_text("a,b\n1,2\n")
    with pytest.raises(TopologyError, match="could not be read"):
        load_matrix(tmp_path / "W.csv")
    with pytest.raises(TopologyError, match="needs path"):
        make_topology("file", 0)


def test_topology_constructor_validates() -> None:
    with pytest.raises(TopologyError, match=r"matrix t=0.*row 0 sums to 0.5"):
        Topology("custom", 2, (np.array([[0.5, 0.0], [0.5, 0.5]]),))
    with pytest.raises(TopologyError, match="does not match n=3"):
        Topology("custom", 3, (np.full((2, 2), 0.5),))


# ------------------------------------------------------------ properties and drawing


def test_properties_keys_and_json() -> None:
    keys = {
        "name", "n", "static", "row_sums_ok", "col_sums_ok", "doubly_stochastic",
        "symmetric", "lambda2", "diameter", "max_in_degree", "max_out_degree", "edges",
    }
    for name in ("ring", "exponential", "one_peer_exponential", "hub16"):
        props = properties(make_topology(name, 16))
        assert keys <= props.keys()
        assert json.loads(json.dumps(props)) == props
    ring = properties(make_topology("ring", 16))
    assert ring["symmetric"] and ring["diameter"] == 8 and ring["edges"] == 32
    assert ring["max_in_degree"] == ring["max_out_degree"] == 2
    assert not properties(make_topology("exponential", 16))["symmetric"]
    assert properties(make_topology("one_peer_exponential", 16))["static"] is False


def test_draw_writes_png(tmp_path: Path) -> None:
    ring_png = tmp_path / "ring.png"
    draw(make_topology("ring", 16), str(ring_png))
    hub_png = tmp_path / "hub16.png"
    draw(make_topology("hub16", 16), str(hub_png), node_values=np.linspace(-1.0, 2.0, 16))
    for path in (ring_png, hub_png):
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 1000
