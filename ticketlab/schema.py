"""The run schema, declared once: the record of each lottery round and of a Supermask run.

Pure Python (no torch, no Sacred, no pymongo): the science core builds these records, the experiments store them
(``info.rounds`` is a list of ``RoundRecord`` dicts, a Supermask run's ``info`` holds a ``SupermaskRecord``), and
the analysis reads their fields. Adding a field here is the one edit that makes it stored and loaded.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class RoundRecord:
    """One round of a lottery run (``info.rounds[k]``)."""

    round: int  # 0: the dense net; k: after k pruning rounds
    percent_remaining: float  # percent of prunable weights kept by the round's mask
    init_hash: str  # state_hash of the seed's initial weights and biases (equal across criteria/treatments)
    start_hash: str  # state_hash of the weights after the mask-1/mask-0 treatments, before training
    final_hash: str  # state_hash of the weights at the end of training
    mask_hash: str  # state_hash of the round's mask
    val_loss: float  # minimum validation loss (the early-stopping point)
    val_acc: float  # validation accuracy there
    test_loss: float  # test loss at the early-stopping iteration
    test_acc: float  # test accuracy at the early-stopping iteration
    early_stop_iteration: int  # iteration of minimum validation loss
    final_val_acc: float  # at the end of training
    final_val_loss: float
    final_test_acc: float
    untrained_test_acc: float  # test accuracy of the round's start weights, no training (untrained Supermask)
    train_seconds: float  # wall time of the round's training, evaluations included

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SupermaskRecord:
    """A learned Supermask run's results (stored at the top of ``info``)."""

    init_hash: str  # the seed's initial weights and biases (as in lottery runs)
    test_acc_mean: float  # mean test accuracy over eval_samples mask samples, at the early-stopping point
    test_acc_std: float
    expected_density: float  # mean keep probability sigmoid(score) at the early-stopping point
    early_stop_iteration: int
    val_acc: float
    untrained_test_acc_mean: float  # scores at their initial value
    eval_samples: int
    train_seconds: float
    final_test_acc_mean: float  # the same at the end of training
    final_test_acc_std: float
    final_expected_density: float
    final_hash: str  # weights, biases and scores at the end of training

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ROUND_FIELDS = [f.name for f in dataclasses.fields(RoundRecord)]
SUPERMASK_FIELDS = [f.name for f in dataclasses.fields(SupermaskRecord)]


# ---- Omniboard
# How a run shows in Omniboard's run list (experiments.omniboard writes the columns, the observer the tags). Omniboard
# reads a custom column's value at ``config_path`` in the run document, so the paths start with ``config.``.

# Tags. Omniboard's Tags cell (250 px) wraps its tag chips onto lines of about 140 px, 24.5 px each, one chip per
# line unless both are tiny, and cuts a chip's text past about 20 characters; its default row height (70 px) shows
# two lines. So a run carries four tags of at most 20 characters, e.g. ``large_final``, ``original/zero``,
# ``fashion_mnist``, ``lenet300_100/seed=1`` (a group's values joined by "/", the seed as ``seed=N``; a group longer
# than TAG_MAX_CHARS becomes one tag per value), and ticketlab's rows show four lines (``ROW_HEIGHT``, Omniboard's
# ``row_height`` setting).
TAG_GROUPS = (("criterion.name",), ("treatment.mask1", "treatment.mask0"), ("data.name",), ("arch.name", "seed"))
TAG_MAX_CHARS = 20
ROW_HEIGHT = 110
OMNIBOARD_DEFAULT_ROW_HEIGHT = 70

CUSTOM_COLUMNS = (  # (column name, config path)
    ("Criterion", "config.criterion.name"), ("Mask-1", "config.treatment.mask1"), ("Mask-0", "config.treatment.mask0"),
    ("Arch", "config.arch.name"), ("Data", "config.data.name"), ("Rounds", "config.pruning.rounds"),
    ("Iterations", "config.training.iterations"),
)
# Metrics a lottery run logs once per round (name ``round.<field>`` of RoundRecord) at the round's last global step,
# the end of its learning curve in Omniboard's Metrics Plot; with the learning curves (train_loss, val_loss, val_acc)
# they are all in [0, ~2.5], so that one-axis plot of every metric stays readable (the percent remaining, 0-100, is
# in ``info.rounds``, not a metric).
ROUND_METRICS = ("test_acc", "untrained_test_acc")
METRIC_COLUMNS = (  # (column name, metric name, extremum)
    ("Best test acc", "round.test_acc", "max"), ("Best untrained acc", "round.untrained_test_acc", "max"),
)

