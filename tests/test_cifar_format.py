"""Conv nets on small data written in the real CIFAR-10 on-disk format (the python pickle batches)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from experiments import datasets


def write_cifar(root, per_batch=40, seed=0):
    """data_batch_1..5 and test_batch as CIFAR-10 writes them: {'data': uint8 (N, 3072), 'labels': [int]}; each
    class has its own mean color so the images are learnable."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in datasets.CIFAR_FILES:
        labels = rng.integers(0, 10, per_batch)
        means = (labels[:, None] * 25).repeat(3072, axis=1)
        data = np.clip(means + rng.normal(0, 20, (per_batch, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)
    return folder


def test_reader_returns_cifar_shaped_tensors(tmp_path):
    write_cifar(tmp_path)
    splits = datasets.load("cifar10", tmp_path, val_size=20)
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert len(splits.train[0]) == 5 * 40 - 20 and len(splits.test[0]) == 40
    assert 0.0 <= float(splits.train[0].min()) and float(splits.train[0].max()) <= 1.0
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f)
    first = raw["data"][0].reshape(3, 32, 32) / 255.0  # channel-major rows, as in CIFAR-10
    assert np.allclose(splits.test[0][0].numpy(), first) and int(splits.test[1][0]) == raw["labels"][0]


@pytest.mark.parametrize("arch", ["conv2", "conv6"])
def test_lottery_conv_nets_on_cifar_format(tmp_path, arch):
    from experiments.lottery import ex

    write_cifar(tmp_path)
    run = ex.run(config_updates={"arch": {"name": arch}, "data": {"name": "cifar10", "root": str(tmp_path),
                                                                    "val_size": 20},
                                 "training": {"iterations": 6, "eval_every": 3, "batch_size": 20},
                                 "pruning": {"rounds": 1}, "seed": 1, "save_artifacts": False})
    rounds = run.info["rounds"]
    assert [r["round"] for r in rounds] == [0, 1]
    assert rounds[1]["percent_remaining"] < 100 and 0 <= rounds[1]["test_acc"] <= 1
    assert run.config["training"]["lr"] == (2e-4 if arch == "conv2" else 3e-4)
    assert run.config["criterion"]["conv_rate"] == (0.1 if arch == "conv2" else 0.15)
