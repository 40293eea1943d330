"""Data sets held in memory as one float tensor each (pixels / 255), with a fixed-seed validation split.

Loaders read the standard on-disk formats under a root folder, as torchvision lays them out:

* ``mnist``:         ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
* ``fashion_mnist``: ``<root>/FashionMNIST/raw/`` with the same four files; Debian's package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) is found without copying
* ``cifar10``:       ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the python pickle format)
* ``synthetic``:     a small seeded, learnable data set of MNIST or CIFAR shape, made in memory

Inputs are scaled by ``preprocess``: ``unit`` (pixels / 255 in [0, 1], the paper's, the default) or ``standardize``
(then also minus the per-channel mean and divided by the per-channel std of the data set's training images,
validation images included). On real MNIST the untrained large_final_same_sign Supermask scores about 0.94 with
unit inputs and about 0.72 standardized: the scaling is part of a run's condition.

A missing data set is downloaded with torchvision when the network allows; otherwise ``DataNotFound`` says exactly
which files to put where. No per-image DataLoader: the training loop indexes the tensors directly.

Each data set is one registration in ``DATASETS``: a ``DataSet`` with its ``load`` (root, **options -> raw
tensors), ``available`` (root -> bool, cheap, reads no data), ``download`` (root -> bool, or None when there is
nothing to fetch) and ``files`` (what to put where, for the error message). ``ensure_available``, ``load`` and the
``data`` ingredient's validation all go through it, so adding a data set is one ``register(DataSet(...))``.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ticketlab.registry import Registry

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


class DataNotFound(FileNotFoundError):
    """A data set is neither on disk nor downloadable; the message says what to put where."""


@dataclasses.dataclass
class Splits:
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    source: str  # where the data came from, for the run record

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(int(t[1].max()) for t in (self.train, self.val, self.test))) + 1


Raw = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]  # x_train, y_train, x_test, y_test, source


@dataclasses.dataclass(frozen=True)
class DataSet:
    """One registered data set."""

    name: str
    load: Callable[..., Raw]  # (root, **options) -> raw tensors; raises DataNotFound when the files are missing
    available: Callable[[Path], bool] = lambda root: True  # on disk under root (cheap: no data read)
    download: Callable[[Path], bool] | None = None  # fetch into root; False when it could not
    files: Callable[[Path], str] = lambda root: ""  # what to put where, for DataNotFound


DATASETS: Registry[DataSet] = Registry("data set")


def register(dataset: DataSet) -> DataSet:
    DATASETS.add(dataset.name, dataset)
    return dataset


# ------------------------------------------------------------------------------------------------ MNIST family


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _idx_complete(path: Path) -> bool:
    """Whether an IDX file (plain or .gz) is as long as its header says, read without loading it: a plain file's
    size, a .gz file's recorded uncompressed size (its last 4 bytes, mod 2**32)."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            head = f.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = f.read(4 * ndim)
        if ndim == 0 or len(dims) != 4 * ndim:
            return False
        expected = 4 + 4 * ndim + int(np.prod([int.from_bytes(dims[i:i + 4], "big") for i in range(0, 4 * ndim, 4)]))
        if path.suffix != ".gz":
            return path.stat().st_size == expected
        with open(path, "rb") as f:
            f.seek(-4, 2)
            return int.from_bytes(f.read(4), "little") == expected % 2 ** 32
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def _cifar_complete(path: Path) -> bool:
    """Whether a CIFAR-10 batch (a pickle) ends as a pickle ends (its STOP opcode): a truncated copy does not."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            return f.read(1) == b"."
    except OSError:
        return False


def _check_complete(files, complete) -> None:
    bad = [str(f) for f in files if not complete(Path(f))]
    if bad:
        raise DataNotFound(f"{bad[0]} is truncated or corrupt: download it again (or copy it whole)"
                           + (f"; also {', '.join(bad[1:])}" if bad[1:] else ""))


def _check_on_disk(name: str, root: Path) -> None:
    """DataNotFound naming a truncated file of an MNIST-family or CIFAR-10 data set found on disk (cheap)."""
    if name in ("mnist", "fashion_mnist"):
        folder, extra = ("MNIST", ()) if name == "mnist" else ("FashionMNIST", (DEBIAN_FASHION_MNIST,))
        found = _find_idx([root / folder / "raw", *extra])
        if found:
            _check_complete(found.values(), _idx_complete)
    elif name == "cifar10" and all((root / "cifar-10-batches-py" / n).is_file() for n in CIFAR_FILES):
        _check_complete([root / "cifar-10-batches-py" / n for n in CIFAR_FILES], _cifar_complete)


def _find_idx(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files (plain or .gz) from the first folder that has all of them."""
    for folder in folders:
        found = {}
        for name in MNIST_FILES:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == 4:
            return found
    return None


def _mnist_files(folder: str, extra: tuple[Path, ...] = ()) -> Callable[[Path], str]:
    wanted = ", ".join(f"{n}[.gz]" for n in MNIST_FILES)
    hint = f" (or install Debian's dataset-fashion-mnist, which puts them in {extra[0]})" if extra else ""
    return lambda root: f"put {wanted} into {root / folder / 'raw'}/{hint}"


def mnist_like(name: str, folder: str, tv_class: str, extra: tuple[Path, ...] = ()) -> DataSet:
    """A data set of four IDX files (MNIST's format) in ``<root>/<folder>/raw`` or one of ``extra``."""
    find = lambda root: _find_idx([root / folder / "raw", *extra])  # noqa: E731
    files = _mnist_files(folder, extra)

    def load(root: Path, **_) -> Raw:
        found = find(root)
        if not found:
            raise DataNotFound(f"{folder} not found: {files(root)}")
        x_train, y_train, x_test, y_test = (torch.from_numpy(_read_idx(found[n]).copy()) for n in MNIST_FILES)
        to_float = lambda x: (x.float() / 255.0).unsqueeze(1)  # noqa: E731 (N, 1, 28, 28)
        return to_float(x_train), y_train.long(), to_float(x_test), y_test.long(), str(found[MNIST_FILES[0]].parent)

    return DataSet(name, load, available=lambda root: find(root) is not None,
                   download=lambda root: _download(tv_class, root), files=files)


register(mnist_like("mnist", "MNIST", "MNIST"))
register(mnist_like("fashion_mnist", "FashionMNIST", "FashionMNIST", (DEBIAN_FASHION_MNIST,)))


# ------------------------------------------------------------------------------------------------ CIFAR-10


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch["labels"])


def _cifar_folder(root: Path) -> Path:
    return root / "cifar-10-batches-py"


def load_cifar10(root: Path, **_) -> Raw:
    folder = _cifar_folder(root)
    if not cifar10.available(root):
        raise DataNotFound(f"CIFAR-10 not found: {cifar10.files(root)}")
    train = [_read_cifar_batch(folder / n) for n in CIFAR_FILES[:5]]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    x_train = torch.from_numpy(np.concatenate([b[0] for b in train])).float() / 255.0
    y_train = torch.from_numpy(np.concatenate([b[1] for b in train])).long()
    return x_train, y_train, torch.from_numpy(x_test).float() / 255.0, torch.from_numpy(y_test).long(), str(folder)


cifar10 = register(DataSet(
    "cifar10", load_cifar10,
    available=lambda root: all((_cifar_folder(root) / n).is_file() for n in CIFAR_FILES),
    download=lambda root: _download("CIFAR10", root),
    files=lambda root: (f"put {', '.join(CIFAR_FILES)} (the python version, cifar-10-python.tar.gz, extracted) "
                        f"into {_cifar_folder(root)}/")))


# ------------------------------------------------------------------------------------------------ synthetic

SYNTHETIC_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


def load_synthetic(root: Path, synthetic_shape: str = "mnist", synthetic_train: int = 6000,
                   synthetic_test: int = 1000, synthetic_seed: int = 0, **_) -> Raw:
    """Ten classes, each a fixed random smooth prototype image; an example is its faint class prototype plus
    Gaussian noise, clipped to [0, 1]. Learnable but not trivial: lenet300_100 is at about 70% after 100 steps and
    near 95% after a few hundred."""
    if synthetic_shape not in SYNTHETIC_SHAPES:
        raise ValueError(f"unknown synthetic_shape {synthetic_shape!r}; valid choices: "
                         f"{', '.join(SYNTHETIC_SHAPES)}")
    shape = SYNTHETIC_SHAPES[synthetic_shape]
    g = torch.Generator().manual_seed(synthetic_seed)
    coarse = torch.rand(10, shape[0], 7, 7, generator=g)
    prototypes = torch.nn.functional.interpolate(coarse, size=shape[1:], mode="bilinear", align_corners=False)
    n = synthetic_train + synthetic_test
    labels = torch.randint(0, 10, (n,), generator=g)
    x = (0.5 + 0.4 * (prototypes[labels] - 0.5) + 0.5 * torch.randn(n, *shape, generator=g)).clamp(0, 1)
    return x[:synthetic_train], labels[:synthetic_train], x[synthetic_train:], labels[synthetic_train:], \
        f"synthetic:{synthetic_shape}:seed{synthetic_seed}"


register(DataSet("synthetic", load_synthetic))  # made in memory: always available, nothing to download


# ------------------------------------------------------------------------------------------------ shared


def _download(tv_class: str, root: Path) -> bool:
    """Try torchvision's download into ``root``; False when the network (or anything else) does not allow it."""
    try:
        import torchvision.datasets as tvd

        getattr(tvd, tv_class)(str(root), train=True, download=True)
        getattr(tvd, tv_class)(str(root), train=False, download=True)
        return True
    except Exception:  # no network, a proxy, a refused host: the caller explains what to do instead
        return False


def names() -> list[str]:
    return DATASETS.names()


def ensure_available(name: str, root: str | Path, download: bool = True) -> None:
    """Raise DataNotFound (saying which files to put where) unless data set ``name`` is on disk or, with
    ``download``, can be downloaded now; cheap when it is on disk (no loading)."""
    dataset, root = DATASETS.get(name), Path(root).expanduser()
    if dataset.available(root):
        _check_on_disk(name, root)
        return
    if download and dataset.download is not None and dataset.download(root) and dataset.available(root):
        return
    tried = "could not be downloaded" if download and dataset.download is not None else f"is not in {root}"
    raise DataNotFound(f"data set {name} {tried}: {dataset.files(root)}")


PREPROCESS = ("unit", "standardize")


def load(name: str, root: str | Path, val_size: int = 5000, split_seed: int = 0, preprocess: str = "unit",
         **options) -> Splits:
    """Data set ``name`` as in-memory train/val/test tensors; ``val_size`` training images split off for
    validation by a permutation seeded with ``split_seed`` (the same split for every run); inputs scaled by
    ``preprocess`` (``unit`` or ``standardize``, see the module's docstring)."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"unknown preprocess {preprocess!r}; valid choices: {', '.join(PREPROCESS)}")
    ensure_available(name, root)  # a missing data set is downloaded, or DataNotFound says what to put where
    x_train, y_train, x_test, y_test, source = DATASETS.get(name).load(Path(root).expanduser(), **options)
    if preprocess == "standardize":
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    if not 0 < val_size < len(x_train):
        raise ValueError(f"val_size must be between 1 and {len(x_train) - 1} for {name}, got {val_size}")
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return Splits((x_train[train_idx], y_train[train_idx]), (x_train[val_idx], y_train[val_idx]), (x_test, y_test),
                  source)
