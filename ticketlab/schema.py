"""The run schema, declared once: what a run stores and what the analysis, the sweep and the report read of it.

Pure Python (no torch, no Sacred, no pymongo). Declared here, and nowhere else:

* ``RoundRecord`` / ``SupermaskRecord``: the record of each lottery round (``info.rounds[k]``) and of a Supermask
  run (the top of ``info``), and ``LOTTERY_INFO`` / ``SUPERMASK_INFO``: the other ``info`` keys a run writes;
* ``CONFIG_COLUMNS``: the short frame column names of config paths (``criterion`` for ``criterion.name``); every
  other config value is a column under its dotted path (``training.eval_every``);
* ``EXECUTION_KEYS`` and ``LATER_KEYS``: the config keys that say how a run executes, not what it computes, and the
  keys added after runs were stored (``ticketlab.identity`` derives a run's condition, point and science version
  from them);
* ``SWEEP_AXES``: the sweep's shorthand grid flags; ``STUDIES``: the comparisons of the report (``Study``).

Adding a record field or a config key that analysis should see is one edit here (a new config key needs none: it
is a dotted column by itself). See docs/run-record.md.
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
    # which two weight states of the previous round the criterion scored in the roles of its initial and final
    # weights (criterion.source: init_final, init_best, iter_final, init_iter; "none" in round 0), and the training
    # steps of round k-1 they were taken at (0: the initialization; None in round 0)
    mask_source: str = "init_final"
    source_init_iteration: int | None = None
    source_final_iteration: int | None = None
    # per prunable weight (layer), how many of the weights the round's mask keeps were chosen by random
    # tie-breaking, not by their scores (masking.criteria.tie_broken): the shortfall of the sign criteria, filled at
    # random, every kept weight of ``random``, kept weights at a score shared with pruned ones; all 0 in round 0;
    # None in runs recorded before the field
    tie_breaks: dict[str, int] | None = None

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
    # started from a mask (supermask.start = run | criterion): the start mask's density and how far the learned
    # mask (keep probability > 0.5, at the early-stopping point) moved from it: Hamming distance (count and
    # fraction of all weights), fraction of start-kept weights dropped, of start-pruned weights taken up
    start_density: float | None = None
    start_hamming: int | None = None
    start_hamming_fraction: float | None = None
    start_dropped_fraction: float | None = None
    start_added_fraction: float | None = None
    # sign randomisation (supermask.sign_draws > 0): test accuracy of the learned mask over the same weights with
    # random signs, flipped signs and std * sign constants; mean and std over all (sign draw, mask sample) pairs,
    # std_draws over the draws' means
    random_signs_acc_mean: float | None = None
    random_signs_acc_std: float | None = None
    random_signs_acc_std_draws: float | None = None
    flipped_signs_acc_mean: float | None = None
    flipped_signs_acc_std: float | None = None
    flipped_signs_acc_std_draws: float | None = None
    signed_constant_acc_mean: float | None = None
    signed_constant_acc_std: float | None = None
    signed_constant_acc_std_draws: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


ROUND_FIELDS = [f.name for f in dataclasses.fields(RoundRecord)]
SUPERMASK_FIELDS = [f.name for f in dataclasses.fields(SupermaskRecord)]

# the other keys of a run's ``info`` (besides ``metrics``, which Sacred's Mongo observer adds); ``execution``: where it ran
# ``condition``/``point``/``science``: the result's identity (``ticketlab.identity``; runs before it stored the point
# hash as ``condition_hash``); ``segments``: one entry per start of the run (a resumed run has several)
IDENTITY_INFO = ("condition", "point", "science", "segments")
LOTTERY_INFO = (*IDENTITY_INFO, "data_source", "init_hash", "layer_rates", "schedule", "rounds", "execution")
# ``start_mask``: what the start mask is (None from scratch): supermask.start=run: the lottery run's id, condition,
# point, science version, the round, its percent remaining and the mask's hash (beyond a run id that only this
# database knows); start=criterion: the criterion, percent, dense iterations and the mask's hash
SUPERMASK_INFO = (*IDENTITY_INFO, "data_source", "execution", "start_mask", *SUPERMASK_FIELDS)

# ------------------------------------------------------------------------------------------------ config

# short frame columns: column name -> config path (every other config value is a column under its dotted path)
CONFIG_COLUMNS = {
    "seed": "seed", "arch": "arch.name", "data": "data.name", "criterion": "criterion.name",
    "mask1": "treatment.mask1", "mask0": "treatment.mask0", "optimizer": "training.optimizer", "lr": "training.lr",
    "iterations": "training.iterations", "batch_size": "training.batch_size", "fc_rate": "criterion.fc_rate",
    "output_rate": "criterion.output_rate", "conv_rate": "criterion.conv_rate", "rounds": "pruning.rounds",
    "signed_constant": "supermask.signed_constant", "rescale": "supermask.rescale",
    "score_init": "supermask.score_init",
}
# the columns the run listings show first, per experiment
LOTTERY_COLUMNS = ("seed", "arch", "data", "criterion", "mask1", "mask0", "rounds", "iterations")
SUPERMASK_COLUMNS = ("seed", "arch", "data", "signed_constant", "rescale", "score_init", "iterations")

# Config paths that say how a run executes, not what it computes: never part of a condition. Keys a version of the
# experiments does not have yet are harmless here (``training.device``: where it runs).
EXECUTION_KEYS = frozenset({
    "data.root", "training.threads", "training.device", "save_artifacts", "training.num_workers",
    "training.deterministic", "training.graphs",
})
SEED_KEY = "seed"
# keys added after runs were stored, with the value those runs had: a condition leaves them out at that value,
# so earlier runs keep their condition hash
LATER_KEYS = {"training.dtype": "float32"}


def flatten(config, prefix: str = "") -> dict:
    """``{"training": {"lr": 0.1}}`` as ``{"training.lr": 0.1}`` (dicts only; lists stay values)."""
    flat = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


def column_of(path: str) -> str:
    """The frame column of a config path (its short name when it has one)."""
    return _COLUMN_OF.get(path, path)


def path_of(column: str) -> str:
    """The config path of a frame column or of a config path (``criterion`` -> ``criterion.name``)."""
    column = column[len("config."):] if column.startswith("config.") else column
    return CONFIG_COLUMNS.get(column, column)


_COLUMN_OF = {path: column for column, path in CONFIG_COLUMNS.items()}

# ------------------------------------------------------------------------------------------------ the sweep

# the sweep's shorthand grid flags: flag -> config path (``--criteria a,b`` is ``--grid criterion.name=a,b``)
SWEEP_AXES = {"criteria": "criterion.name", "mask1": "treatment.mask1", "mask0": "treatment.mask0",
              "seeds": "seed"}

# ------------------------------------------------------------------------------------------------ the studies


@dataclasses.dataclass(frozen=True)
class Study:
    """One comparison of the report: ``factor``'s values against ``baseline`` at fixed values of other columns."""

    name: str
    factor: str  # the frame column that varies (criterion, mask1, mask0)
    baseline: str  # the factor value the others are tested against
    fixed: dict  # frame column -> value the study's runs have
    metric: str  # the round-record field compared
    title: str
    ylabel: str
    values: tuple[str, ...] = ()  # the factor values compared (empty: every value the runs hold)
    # the baseline is a control (random, original, zero, ...), black and dashed in every figure; False: it is one
    # of the compared methods, drawn in its own color
    control: bool = True


STUDIES = {study.name: study for study in (
    Study("criteria", "criterion", "random", {"mask1": "original", "mask0": "zero"}, "test_acc",
          "Mask criteria: test accuracy at early stopping", "test accuracy"),
    Study("mask1", "mask1", "original", {"criterion": "large_final", "mask0": "zero"}, "test_acc",
          "Mask-1 actions (kept weights' start values), large_final masks", "test accuracy"),
    Study("mask0", "mask0", "zero", {"criterion": "large_final", "mask1": "original"}, "test_acc",
          "Mask-0 actions (pruned weights' values), large_final masks", "test accuracy"),
    Study("untrained", "criterion", "random", {"mask0": "zero"}, "untrained_test_acc",
          "Untrained Supermasks: test accuracy of masked initial weights, no training", "untrained test accuracy"),
    # the rebuttal's open questions (docs/open-questions.md; python -m experiments.questions runs them)
    *(Study(f"source_{name}", "criterion.source", "init_final",
            {"criterion": name, "mask1": "original", "mask0": "zero"}, "test_acc",
            f"Q9: the weight states {name} scores (criterion.source), test accuracy at early stopping",
            "test accuracy") for name in ("large_final", "magnitude_increase")),
    Study("input_scaling", "data.preprocess", "unit",
          {"criterion": "large_final_same_sign", "mask1": "original", "mask0": "zero"}, "untrained_test_acc",
          "Input scaling (data.preprocess): untrained large_final_same_sign Supermasks", "untrained test accuracy"),
    # the rebuttal's own claims (docs/rebuttal-claims.md; python -m experiments.questions lfss|bimodal|quadrant|mask0)
    Study("lfss_trained", "criterion", "large_final", {"mask1": "original", "mask0": "zero"}, "test_acc",
          "Rebuttal 3: the sign criteria trained vs large_final, test accuracy at early stopping", "test accuracy",
          values=("large_final", "large_final_same_sign", "large_final_diff_sign"), control=False),
    Study("bimodal", "mask1", "signed_reinit", {"criterion": "large_final", "mask0": "zero"}, "test_acc",
          "Rebuttal 6: sign-kept mask-1 actions vs signed_reinit (signed_bimodal: the bimodal control)",
          "test accuracy", values=("signed_reinit", "signed_reshuffle", "signed_constant", "signed_bimodal"),
          control=False),
    *(Study(f"quadrant_{name}", "mask1", name, {"criterion": "large_final", "mask0": "zero"}, "test_acc",
            f"Rebuttal 2, the weight quadrant: signed_{name} (sign kept) vs {name} (sign dropped)",
            "test accuracy", values=(name, f"signed_{name}"), control=False)
      for name in ("reinit", "reshuffle", "constant")),
)}

# ---- Omniboard
# How a run shows in Omniboard's run list (experiments.omniboard writes the columns, the observer the tags).

# Tags. Omniboard's Tags cell (250 px) wraps its tag chips onto lines of about 140 px, 24.5 px each, one chip per
# line unless both are tiny, and cuts a chip's text past about 20 characters; its default row height (70 px) shows
# two lines. So a run carries four tags of at most 20 characters, and ticketlab's rows show four lines
# (``ROW_HEIGHT``, Omniboard's ``row_height`` setting). A run's tags are its experiment's ``TAG_GROUPS`` (other
# experiments: lottery's): per group, the run's values (``Tag``) joined by "/"; a group longer than TAG_MAX_CHARS
# takes its values' ``short`` forms one after the other until it fits, where it has them, else becomes one tag per
# value. Measured in headless Chromium (tests/test_omniboard.py): a chip shows up to about 119 px of text (10.2 px
# Helvetica/Arial): ``lenet300_100/seed=1`` takes 98 px, ``large_init_large_final`` 94 px, but
# ``magnitude_increase/30%`` is cut.
#   lottery:   ``large_final``, ``original/zero``, ``fashion_mnist``, ``lenet300_100/seed=1``
#   supermask: ``supermask`` (``supermask/SC/rescale`` with signed-constant weights and dynamic rescaling), its
#              start (``scratch``, ``from large_final/30%``, ``from run 12/round 3``; past 20 characters without
#              "from": ``large_final/12.5%``, then without the percent or round: ``magnitude_increase``),
#              ``fashion_mnist``, ``lenet300_100/seed=1``


@dataclasses.dataclass(frozen=True)
class Tag:
    """One value of a tag group: ``text`` with ``{}`` filled by the run's config value at ``path`` (no path: the
    text as it is). Left out where that value is missing, None or False, or where the config value at ``when[0]``
    is not ``when[1]``. ``short``: its text in a group too long for one tag ("": left out there)."""

    path: str | None = None
    text: str = "{}"
    when: tuple[str, str] | None = None
    short: str | None = None


_DATA, _ARCH_SEED = (Tag("data.name"),), (Tag("arch.name"), Tag("seed", "seed={}"))
_START = "supermask.start"
TAG_GROUPS = {
    "lottery": ((Tag("criterion.name"),), (Tag("treatment.mask1"), Tag("treatment.mask0")), _DATA, _ARCH_SEED),
    "supermask": ((Tag(text="supermask"), Tag("supermask.signed_constant", "SC"), Tag("supermask.rescale", "rescale")),
                  (Tag(text="scratch", when=(_START, "scratch")),
                   Tag("supermask.start_criterion", "from {}", (_START, "criterion"), short="{}"),
                   Tag("supermask.start_percent", "{:g}%", (_START, "criterion"), short=""),
                   Tag("supermask.start_run", "from run {}", (_START, "run"), short="run {}"),
                   Tag("supermask.start_round", "round {}", (_START, "run"), short="")),
                  _DATA, _ARCH_SEED),
}
TAG_MAX_CHARS = 20
ROW_HEIGHT = 110
OMNIBOARD_DEFAULT_ROW_HEIGHT = 70

# Columns. Omniboard reads a custom column's value at ``config_path`` in the run document: a ``config.`` path, or
# an ``info.`` one (Omniboard 2.16.1's run list asks its server for every column path outside ``config`` and reads
# it with lodash ``get`` before it drops ``info``; columns of keys a run lacks stay empty in its row). The lottery
# columns (Criterion ... Rounds) are empty in Supermask rows, Start and Density in lottery rows; Iterations, Arch,
# Data and the Result column (a Supermask's test accuracy, mean over mask samples) serve both.
CUSTOM_COLUMNS = (  # (column name, path in the run document)
    ("Criterion", "config.criterion.name"), ("Mask-1", "config.treatment.mask1"), ("Mask-0", "config.treatment.mask0"),
    ("Start", "config.supermask.start"), ("Density", "info.expected_density"),
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

