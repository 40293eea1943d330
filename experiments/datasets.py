"""Data sets held in memory as one float tensor each (pixels / 255), with a fixed-seed validation split.

Loaders read the standard on-disk formats under a root folder, as torchvision lays them out:

* ``mnist``:         ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``
* ``fashion_mnist``: ``<root>/FashionMNIST/raw/`` with the same four files; Debian's package
  ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) is found without copying
* ``cifar10``:       ``<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the python pickle format)
* ``synthetic``:     a small seeded, learnable data set of MNIST or CIFAR shape, made in memory

A missing data set is downloaded with torchvision when the network allows; otherwise ``DataNotFound`` says exactly
which files to put where. No per-image DataLoader: the training loop indexes the tensors directly.
"""

from __future__ import annotations

import dataclasses
import gzip
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from masking.registry import Registry

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
LOADERS: Registry[Callable[..., Raw]] = Registry("data set")


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


def _mnist_like(root: Path, folder: str, tv_class: str, extra: tuple[Path, ...] = ()) -> Raw:
    raw = root / folder / "raw"
    folders = [raw, *extra]
    files = _find_idx(folders) or (_download(tv_class, root) and _find_idx(folders))
    if not files:
        wanted = ", ".join(f"{n}[.gz]" for n in MNIST_FILES)
        raise DataNotFound(f"{folder} not found and could not be downloaded: put {wanted} into {raw}/"
                           + (f" (or install Debian's dataset-fashion-mnist, which puts them in {extra[0]})"
                              if extra else ""))
    x_train, y_train, x_test, y_test = (torch.from_numpy(_read_idx(files[n]).copy()) for n in MNIST_FILES)
    to_float = lambda x: (x.float() / 255.0).unsqueeze(1)  # noqa: E731 (N, 1, 28, 28)
    return to_float(x_train), y_train.long(), to_float(x_test), y_test.long(), str(files[MNIST_FILES[0]].parent)


@LOADERS.register("mnist")
def load_mnist(root: Path, **_) -> Raw:
    return _mnist_like(root, "MNIST", "MNIST")


@LOADERS.register("fashion_mnist")
def load_fashion_mnist(root: Path, **_) -> Raw:
    return _mnist_like(root, "FashionMNIST", "FashionMNIST", (DEBIAN_FASHION_MNIST,))


# ------------------------------------------------------------------------------------------------ CIFAR-10


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(batch["labels"])


@LOADERS.register("cifar10")
def load_cifar10(root: Path, **_) -> Raw:
    folder = root / "cifar-10-batches-py"
    present = lambda: all((folder / n).is_file() for n in CIFAR_FILES)  # noqa: E731
    if not present() and not (_download("CIFAR10", root) and present()):
        raise DataNotFound(f"CIFAR-10 not found and could not be downloaded: put {', '.join(CIFAR_FILES)} "
                           f"(the python version, cifar-10-python.tar.gz, extracted) into {folder}/")
    train = [_read_cifar_batch(folder / n) for n in CIFAR_FILES[:5]]
    x_test, y_test = _read_cifar_batch(folder / "test_batch")
    x_train = torch.from_numpy(np.concatenate([b[0] for b in train])).float() / 255.0
    y_train = torch.from_numpy(np.concatenate([b[1] for b in train])).long()
    return x_train, y_train, torch.from_numpy(x_test).float() / 255.0, torch.from_numpy(y_test).long(), str(folder)


# ------------------------------------------------------------------------------------------------ synthetic

SYNTHETIC_SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}


@LOADERS.register("synthetic")
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
    return LOADERS.names()


def ensure_available(name: str, root: str | Path, download: bool = True) -> None:
    """Raise DataNotFound (saying which files to put where) unless data set ``name`` is on disk or, with
    ``download``, can be downloaded now; cheap when it is on disk (no loading)."""
    root = Path(root).expanduser()
    if name in ("mnist", "fashion_mnist"):
        folder, extra = ("MNIST", ()) if name == "mnist" else ("FashionMNIST", (DEBIAN_FASHION_MNIST,))
        found = _find_idx([root / folder / "raw", *extra])
        if found:
            _check_complete(found.values(), _idx_complete)
            return
    elif name == "cifar10":
        if all((root / "cifar-10-batches-py" / n).is_file() for n in CIFAR_FILES):
            _check_complete([root / "cifar-10-batches-py" / n for n in CIFAR_FILES], _cifar_complete)
            return
    else:
        return  # synthetic: made in memory
    if not download:
        raise DataNotFound(f"data set {name} is not in {root}")
    LOADERS.get(name)(root)  # tries the download; raises DataNotFound with the files to put where


def load(name: str, root: str | Path, val_size: int = 5000, split_seed: int = 0, **options) -> Splits:
    """Data set ``name`` as in-memory train/val/test tensors; ``val_size`` training images split off for
    validation by a permutation seeded with ``split_seed`` (the same split for every run)."""
    loader = LOADERS.get(name)
    x_train, y_train, x_test, y_test, source = loader(Path(root).expanduser(), **options)
    if not 0 < val_size < len(x_train):
        raise ValueError(f"val_size must be between 1 and {len(x_train) - 1} for {name}, got {val_size}")
    perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return Splits((x_train[train_idx], y_train[train_idx]), (x_train[val_idx], y_train[val_idx]), (x_test, y_test),
                  source)
