"""What makes two runs the same condition, and what sets runs apart: pure functions (no torch, no Sacred).

A *condition* is a run's config minus the seed minus the execution keys (``ticketlab.identity``, where it is
declared: ``condition_hash`` is the frame's ``condition`` column, ``point_hash`` adds the seed); runs of one condition
are seeds of one experiment, and the science version (the frame's ``science`` column) is part of what sets runs
apart.

On a frame of runs (``analysis.load_runs``), every config value is a column (``criterion``, ``training.eval_every``):
``differences`` names the config columns in which runs differ beyond a factor, ``settings`` splits runs into groups
that differ only in the factor, ``refusal`` is the one-line message that says what differs and how to filter.
"""

from __future__ import annotations

import pandas as pd

from ticketlab.schema import CONFIG_COLUMNS, EXECUTION_KEYS, SEED_KEY, path_of

NOT_CONFIG = frozenset({"run_id", "status", "experiment", "condition"})
SCIENCE = "science"  # the frame column of the science version: part of what sets runs apart


def config_columns(df: pd.DataFrame) -> list[str]:
    """The frame columns that hold config values (short names and dotted paths)."""
    return [c for c in df.columns if c not in NOT_CONFIG and (c in CONFIG_COLUMNS or "." in c)]


def condition_columns(df: pd.DataFrame, factor: str | None = None) -> list[str]:
    """The columns that define a setting, without ``factor``: the config columns (never the seed or execution
    keys) and the science version."""
    skip = {SEED_KEY, *([path_of(factor)] if factor else [])}
    columns = [c for c in config_columns(df) if path_of(c) not in skip and path_of(c) not in EXECUTION_KEYS]
    return columns + ([SCIENCE] if SCIENCE in df and factor != SCIENCE else [])


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
