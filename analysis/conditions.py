"""What makes two runs the same condition, and what sets runs apart: pure functions (no torch, no Sacred).

A *condition* is a run's config minus the seed minus the execution keys (``ticketlab.schema.EXECUTION_KEYS``:
data root, threads, device, ...): runs of one condition are seeds of one experiment. ``condition_hash(config)``
hashes the config with the seed (the sweep skips a point whose hash matches a COMPLETED run);
``condition_hash(config, ignore_seed=True)`` is the frame's ``condition`` column.

On a frame of runs (``analysis.load_runs``), every config value is a column (``criterion``, ``training.eval_every``):
``differences`` names the config columns in which runs differ beyond a factor, ``settings`` splits runs into groups
that differ only in the factor, ``refusal`` is the one-line message that says what differs and how to filter.
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping

import pandas as pd

from ticketlab.schema import CONFIG_COLUMNS, EXECUTION_KEYS, SEED_KEY, condition_config, path_of

NOT_CONFIG = frozenset({"run_id", "status", "experiment", "condition"})


def condition_hash(config: Mapping, ignore_seed: bool = False, flat: bool = False) -> str:
    """A stable hash of what a run computes (its config minus execution keys; minus the seed when asked).
    ``flat=True``: ``config`` is already flat (``ticketlab.schema.flatten``)."""
    if flat:
        skip = EXECUTION_KEYS | ({SEED_KEY} if ignore_seed else set())
        kept = {k: v for k, v in config.items() if k not in skip}
    else:
        kept = condition_config(config, ignore_seed=ignore_seed)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_columns(df: pd.DataFrame) -> list[str]:
    """The frame columns that hold config values (short names and dotted paths)."""
    return [c for c in df.columns if c not in NOT_CONFIG and (c in CONFIG_COLUMNS or "." in c)]


def condition_columns(df: pd.DataFrame, factor: str | None = None) -> list[str]:
    """Config columns that define a condition, without ``factor`` (and never the seed or execution keys)."""
    skip = {SEED_KEY, *([path_of(factor)] if factor else [])}
    return [c for c in config_columns(df) if path_of(c) not in skip and path_of(c) not in EXECUTION_KEYS]


def _text(value) -> str:
    return "missing" if value is None or (isinstance(value, float) and value != value) else str(value)


def differences(df: pd.DataFrame, factor: str | None = None) -> dict[str, list[str]]:
    """{column: its distinct values} of the condition columns (but ``factor``) in which the runs differ."""
    runs = df.drop_duplicates("run_id") if "run_id" in df else df
    out = {}
    for column in condition_columns(runs, factor):
        values = runs[column].map(_text)
        if values.nunique() > 1:
            out[column] = sorted(values.unique())
    return out


def refusal(diff: dict[str, list[str]], factor: str) -> str:
    """One line: the runs differ in more than ``factor``, in what, and how to filter."""
    detail = "; ".join(f"{c}: {', '.join(v)}" for c, v in diff.items())
    column, values = next(iter(diff.items()))
    return (f"the runs differ in more than {factor!r} ({detail}): they are not seeds of one condition; select one "
            f"setting, e.g. where={{{column!r}: {values[0]!r}}} (command line: --where {column}={values[0]}), "
            f"or let report compare each setting apart")


def settings(df: pd.DataFrame, factor: str) -> list[tuple[str, pd.DataFrame]]:
    """The runs split into settings: groups that differ only in ``factor`` and the seed. Each is named by the
    values of the columns that set it apart from the others (``""`` when there is one setting)."""
    diff = differences(df, factor)
    if not diff:
        return [("", df)]
    keys = list(diff)
    runs = df.drop_duplicates("run_id")
    label_of = {run_id: ", ".join(f"{k}={_text(v)}" for k, v in zip(keys, values))
                for run_id, *values in runs[["run_id", *keys]].itertuples(index=False)}
    labels = df["run_id"].map(label_of)
    return [(label, df[labels == label]) for label in sorted(labels.unique())]
