"""Tests for dice_repro.data: real dataset loaders, partitions, batch schedules, probes and caching."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dice_repro import data
from dice_repro.data import (
    DATASET_NAMES,
    Dataset,
    DatasetMissingError,
    batch_schedule,
    load_dataset,
    load_saved_dataset,
    partition,
    rounds_per_epoch,
    save_dataset,
    select_probe,
)


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    """The default dataset, loaded once for the module."""
    return load_dataset("mnist5k")


def _row_hashes(x: torch.Tensor) -> set[str]:
    """Hash every image's bytes so identical images collide."""
    return {hashlib.sha1(row.numpy().tobytes()).hexdigest() for row in x.reshape(x.shape[0], -1)}


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_mnist5k_shapes_balance_and_normalisation(mnist5k: Dataset) -> None:
    assert mnist5k.x_train.shape == (4000, 1, 28, 28)
    assert mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert mnist5k.input_shape == (1, 28, 28)
    assert mnist5k.x_train.dtype == torch.float32 and mnist5k.y_train.dtype == torch.int64
    assert mnist5k.num_classes == 10
    assert torch.bincount(mnist5k.y_train).tolist() == [400] * 10
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10
    assert abs(mnist5k.x_train.mean().item()) < 0.1
    assert 0.8 < mnist5k.x_train.std().item() < 1.2
    assert mnist5k.x_train.min().item() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


def test_mnist5k_split_is_disjoint_and_fixed(mnist5k: Dataset) -> None:
    train, test = _row_hashes(mnist5k.x_train), _row_hashes(mnist5k.x_test)
    assert len(test) == 1000 and not train & test
    again = load_dataset("mnist5k")
    assert torch.equal(again.y_test, mnist5k.y_test) and torch.equal(again.x_test, mnist5k.x_test)


def test_digits_shapes_and_resize() -> None:
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 1, 8, 8) and ds.x_test.shape == (360, 1, 8, 8)
    assert ds.num_classes == 10 and ds.y_train.dtype == torch.int64
    assert abs(ds.x_train.mean().item()) < 1e-4 and ds.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    assert load_dataset("digits", image_size=16).input_shape == (1, 16, 16)


def test_unknown_dataset_lists_names() -> None:
    with pytest.raises(ValueError, match="tiny_imagenet"):
        load_dataset("imagenet")
    assert set(DATASET_NAMES) >= {"mnist5k", "digits", "cifar10"}


def test_iid_partition_disjoint_balanced_and_seeded(mnist5k: Dataset) -> None:
    parts = partition(mnist5k.y_train, 16, 250, "iid", seed=3)
    assert parts.shape == (16, 250) and parts.dtype == torch.int64
    assert parts.unique().numel() == 16 * 250
    counts = torch.stack([torch.bincount(mnist5k.y_train[p], minlength=10) for p in parts])
    assert counts.min() >= 5 and counts.max() <= 50  # expected 25 each
    assert torch.equal(parts, partition(mnist5k.y_train, 16, 250, "iid", seed=3))
    assert not torch.equal(parts, partition(mnist5k.y_train, 16, 250, "iid", seed=4))
    assert torch.equal(parts, partition(mnist5k.y_train, 16, 250, "resample", seed=3))


def test_partition_errors(mnist5k: Dataset) -> None:
    with pytest.raises(ValueError, match=r"32 nodes.*512.*lower samples_per_node or nodes"):
        partition(mnist5k.y_train, 32, 512)
    with pytest.raises(ValueError, match="iid, dirichlet, resample"):
        partition(mnist5k.y_train, 4, 10, "shards")


def _mean_max_share(y: torch.Tensor, parts: torch.Tensor) -> float:
    """Average over nodes of the largest class's share of the node's samples."""
    counts = torch.stack([torch.bincount(y[p], minlength=10) for p in parts]).float()
    return (counts.max(dim=1).values / parts.shape[1]).mean().item()


def test_dirichlet_partition_skew_and_disjointness(mnist5k: Dataset) -> None:
    y = mnist5k.y_train
    skewed = partition(y, 16, 250, "dirichlet", alpha=0.1, seed=0)
    even = partition(y, 16, 250, "dirichlet", alpha=100.0, seed=0)
    for parts in (skewed, even):
        assert parts.shape == (16, 250) and parts.unique().numel() == 16 * 250
    assert _mean_max_share(y, skewed) > _mean_max_share(y, even) + 0.2
    assert torch.equal(skewed, partition(y, 16, 250, "dirichlet", alpha=0.1, seed=0))
    # Nearly all samples: class pools run out and shortfalls come from the fullest classes.
    full = partition(y, 16, 249, "dirichlet", alpha=0.1, seed=1)
    assert full.unique().numel() == 16 * 249


def test_batch_schedule_fixed_partition_permutes_pool() -> None:
    pools = partition(torch.arange(200) % 10, 4, 50, "iid", seed=0)
    sched = batch_schedule(pools, batch_size=8, epochs=3, scheme="iid", seed=1)
    per_epoch = rounds_per_epoch(50, 8)
    assert per_epoch == 6 and sched.shape == (18, 4, 8) and sched.dtype == torch.int64
    for k in range(4):
        pool = set(pools[k].tolist())
        for e in range(3):
            epoch = sched[e * per_epoch : (e + 1) * per_epoch, k].reshape(-1).tolist()
            assert len(set(epoch)) == len(epoch) == 48 and set(epoch) <= pool
    assert not torch.equal(sched[:per_epoch], sched[per_epoch : 2 * per_epoch])
    assert torch.equal(sched, batch_schedule(pools, 8, 3, "iid", seed=1))
    with pytest.raises(ValueError, match="exceeds samples_per_node"):
        batch_schedule(pools, 64, 1)


def test_batch_schedule_resample_draws_with_replacement() -> None:
    pools = partition(torch.arange(4000) % 10, 4, 512, "resample", seed=0)
    sched = batch_schedule(pools, batch_size=16, epochs=2, scheme="resample", seed=5)
    assert sched.shape == (64, 4, 16)
    for k in range(4):
        epoch = sched[:32, k].reshape(-1)
        assert set(epoch.tolist()) <= set(pools[k].tolist())
        assert epoch.unique().numel() < 512  # with replacement: ~63% distinct
    assert torch.equal(sched, batch_schedule(pools, 16, 2, "resample", seed=5))
    assert not torch.equal(sched, batch_schedule(pools, 16, 2, "resample", seed=6))


def test_select_probe(mnist5k: Dataset) -> None:
    assert select_probe(mnist5k).tolist() == [0, 1, 2, 3, 4]
    probe = select_probe(mnist5k, "stratified", size=25, seed=0)
    counts = torch.bincount(mnist5k.y_test[probe], minlength=10)
    assert probe.unique().numel() == 25 and counts.max() - counts.min() <= 1
    assert torch.equal(probe, select_probe(mnist5k, "stratified", size=25, seed=0))
    with pytest.raises(ValueError, match="1000 test images"):
        select_probe(mnist5k, size=1001)
    with pytest.raises(ValueError, match="first, stratified"):
        select_probe(mnist5k, "random")


def test_missing_mnist_and_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and "data_dir" in msg and "train-images-idx3-ubyte" in msg and "download" in msg
    assert isinstance(err.value, FileNotFoundError)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "debian")
    with pytest.raises(DatasetMissingError, match="apt-get install dataset-fashion-mnist") as err:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    assert str(tmp_path / "debian") in str(err.value) and str(tmp_path / "FashionMNIST" / "raw") in str(err.value)


def test_missing_cifar10_and_tiny_imagenet(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value) and "data_dir" in str(err.value)
    assert "download: true" in str(err.value)
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("tiny_imagenet", data_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "tiny-imagenet-200") in msg and "wnids.txt" in msg and "--data-dir" in msg


def test_idx_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(6, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(6) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(3, 28, 28)),
        "t10k-labels-idx1-ubyte": np.array([9, 0, 4]),
    }
    folder = tmp_path / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for i, (stem, arr) in enumerate(arrays.items()):
        _write_idx(folder / (stem + (".gz" if i == 0 else "")), arr)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.y_test.tolist() == [9, 0, 4] and ds.y_train.tolist() == list(range(6))
    raw = (ds.x_train[:, 0] * 0.3081 + 0.1307) * 255
    assert torch.allclose(raw, torch.from_numpy(arrays["train-images-idx3-ubyte"]).float(), atol=1e-3)
    assert data.read_idx(folder / "t10k-labels-idx1-ubyte").tolist() == [9, 0, 4]


@pytest.mark.skipif(not data.DEBIAN_FASHION_MNIST_DIR.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package() -> None:
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert abs(ds.x_train.mean().item()) < 0.01


def test_save_load_round_trip(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    path = tmp_path / "cache" / "digits.pt"
    save_dataset(ds, path)
    back = load_saved_dataset(path)
    assert back.name == "digits" and back.num_classes == 10
    for field in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(back, field), getattr(ds, field))
    assert [p.name for p in path.parent.iterdir()] == ["digits.pt"]


def test_tiny_imagenet_folder_layout(tmp_path: Path) -> None:
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for wnid in wnids:
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
    lines = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    ds = load_dataset("tiny_imagenet", data_dir=tmp_path)
    assert ds.x_train.shape == (4, 3, 28, 28) and ds.x_test.shape == (3, 3, 28, 28)
    assert ds.num_classes == 2 and ds.y_train.tolist() == [0, 0, 1, 1] and ds.y_test.tolist() == [1, 0, 1]
