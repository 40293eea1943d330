"""Data sets are registry entries: the data ingredient's choices, ensure_available and load all go through
``datasets.DATASETS``, so one registration adds a data set; a missing one is refused saying what to put where."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from experiments import datasets
from experiments.errors import ConfigError, DataError


def write_idx(folder, n_train=30, n_test=10, gz=False):
    """The four MNIST IDX files (magic, dims, uint8 data), as yann.lecun.com serves them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8)}
    for name, array in arrays.items():
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        opener, path = (gzip.open, folder / f"{name}.gz") if gz else (open, folder / name)
        with opener(path, "wb") as f:
            f.write(header + array.tobytes())
    return arrays


def test_every_data_set_is_one_registration():
    assert {"mnist", "fashion_mnist", "cifar10", "synthetic"} <= set(datasets.names())
    assert all(isinstance(datasets.DATASETS.get(n), datasets.DataSet) for n in datasets.names())


def test_mnist_from_idx_files(tmp_path):
    assert not datasets.DATASETS.get("mnist").available(tmp_path)
    arrays = write_idx(tmp_path / "MNIST" / "raw", gz=True)
    assert datasets.DATASETS.get("mnist").available(tmp_path)
    datasets.ensure_available("mnist", tmp_path, download=False)
    splits = datasets.load("mnist", tmp_path, val_size=5)
    assert splits.input_shape == (1, 28, 28) and len(splits.train[0]) == 25 and len(splits.test[0]) == 10
    assert torch.equal(splits.test[0][0, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"][0]).float() / 255)


@pytest.mark.parametrize("name,where", [("mnist", "MNIST/raw/"), ("cifar10", "cifar-10-batches-py/")])
def test_a_missing_data_set_says_what_to_put_where(tmp_path, name, where):
    with pytest.raises(datasets.DataNotFound) as error:
        datasets.ensure_available(name, tmp_path, download=False)
    message = str(error.value)
    assert message.startswith(f"data set {name} is not in {tmp_path}: put ") and str(tmp_path / where) in message
    assert "\n" not in message


def test_a_new_data_set_is_one_registration(tmp_path):
    """A registered data set is a valid data.name, checked by ensure_available, loaded by load; an unregistered
    name is refused with the registered ones listed (no silent fallback to synthetic)."""
    from experiments import lottery as lottery_ex

    def load_tiny(root, **_):
        x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        y = torch.arange(40) % 10
        return x[:30], y[:30], x[30:], y[30:], str(root / "tiny.pt")

    tiny = datasets.DataSet("tiny", load_tiny, available=lambda root: (root / "tiny.pt").is_file(),
                            files=lambda root: f"put tiny.pt into {root}/")
    datasets.register(tiny)
    try:
        with pytest.raises(DataError, match=f"data set tiny is not in {tmp_path}: put tiny.pt into {tmp_path}/"):
            lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"},
                              config_updates={"data": {"name": "tiny", "root": str(tmp_path), "val_size": 5}})
        (tmp_path / "tiny.pt").write_bytes(b"")
        run = lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"}, config_updates={
            "data": {"name": "tiny", "root": str(tmp_path), "val_size": 5}, "save_artifacts": False,
            "pruning": {"rounds": 0}, "training": {"iterations": 10, "eval_every": 5, "batch_size": 5}})
        assert run.info["data_source"] == str(tmp_path / "tiny.pt") and len(run.info["rounds"]) == 1
    finally:
        datasets.DATASETS._items.pop("tiny")
    with pytest.raises(ConfigError, match="data.name='tiny' is not valid; valid choices: mnist, fashion_mnist"):
        lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"},
                          config_updates={"data": {"name": "tiny"}})
