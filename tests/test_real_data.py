"""Real Fashion-MNIST (Debian's dataset-fashion-mnist, which `make setup` installs): the reduced configs learn.

Library calls (``ex.run``), no observer: what a notebook user does."""

from __future__ import annotations

import pytest

from experiments import datasets

pytestmark = pytest.mark.skipif(not datasets.DEBIAN_FASHION_MNIST.is_dir(),
                                reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


def test_reduced_lottery_round_0_beats_80_percent(tmp_path):
    from experiments.lottery import ex

    run = ex.run(named_configs=["reduced"], config_updates={
        "data": {"name": "fashion_mnist", "root": str(tmp_path)}, "pruning": {"rounds": 0}, "seed": 1,
        "save_artifacts": False})
    record = run.info["rounds"][0]
    assert record["test_acc"] > 0.80, record
    assert record["untrained_test_acc"] < 0.25


def test_learned_supermask_clearly_beats_chance(tmp_path):
    from experiments.supermask import ex

    run = ex.run(named_configs=["reduced"], config_updates={
        "data": {"name": "fashion_mnist", "root": str(tmp_path)}, "training": {"iterations": 2000}, "seed": 1,
        "save_artifacts": False})
    assert run.info["test_acc_mean"] > 0.6, run.info  # chance is 0.1
    assert run.info["untrained_test_acc_mean"] < 0.25
