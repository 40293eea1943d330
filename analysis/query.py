"""The run database as tidy pandas frames, in one query each.

``load_runs`` returns one row per (lottery run, round); ``load_supermask_runs`` one row per Supermask run. Both
read the run record contract of ``experiments/lottery.py`` and ``experiments/supermask.py`` (config and ``info``)
from the compact ``run_index`` collection (``analysis.run_index``) in two round trips, so loading stays fast
as the database grows; ``where`` filters run on the fetched entries. Runs without an index entry (written by
another observer) are indexed first; a user who may not write gets them read from ``runs`` (slower, same result).

When to use which: these frames for tables, statistics and figures over many runs; incense
(``incense.ExperimentLoader(mongo_uri, db_name).find_by_id(run_id)``) to open one run as an object, read its
metric series and download its artifacts (``exp.artifacts["round_03.pt"].content``). incense loads each run
separately (and its ``find_by_config_key`` matches substrings), so it is slow for thousands of runs.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import pymongo
import pymongo.errors

from analysis import run_index

SERVER_TIMEOUT_MS = 5000

# where-filter aliases: a frame column -> the run document field it comes from
ALIASES = {
    "run_id": "_id", "status": "status", "seed": "config.seed", "arch": "config.arch.name",
    "data": "config.data.name", "criterion": "config.criterion.name", "mask1": "config.treatment.mask1",
    "mask0": "config.treatment.mask0", "optimizer": "config.training.optimizer", "lr": "config.training.lr",
    "iterations": "config.training.iterations", "batch_size": "config.training.batch_size",
    "fc_rate": "config.criterion.fc_rate", "output_rate": "config.criterion.output_rate",
    "conv_rate": "config.criterion.conv_rate", "rounds": "config.pruning.rounds",
    "signed_constant": "config.supermask.signed_constant", "rescale": "config.supermask.rescale",
    "score_init": "config.supermask.score_init",
}
# config columns of each frame (besides run_id, status, experiment); together they distinguish conditions
LOTTERY_CONFIG = ["seed", "arch", "data", "criterion", "mask1", "mask0", "optimizer", "lr", "iterations",
                  "batch_size", "fc_rate", "output_rate", "conv_rate", "rounds"]
SUPERMASK_CONFIG = ["seed", "arch", "data", "signed_constant", "rescale", "score_init", "optimizer", "lr",
                    "iterations", "batch_size"]
ROUND_FIELDS = ["round", "percent_remaining", "test_acc", "val_acc", "final_test_acc", "untrained_test_acc",
                "early_stop_iteration", "init_hash", "final_hash", "mask_hash", "test_loss", "val_loss"]
SUPERMASK_FIELDS = ["test_acc_mean", "test_acc_std", "expected_density", "early_stop_iteration", "val_acc",
                    "untrained_test_acc_mean", "final_test_acc_mean", "init_hash", "final_hash"]


class QueryError(ValueError):
    """A query that cannot be answered (unreachable database, unknown key, nothing found); the message says why."""


def connect(mongo_uri: str) -> pymongo.MongoClient:
    uri = mongo_uri if "://" in mongo_uri else f"mongodb://{mongo_uri}"
    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
        client.admin.command("ping")
    except (pymongo.errors.PyMongoError, ValueError) as error:
        raise QueryError(f"cannot reach the run database at {mongo_uri!r}: {error.__class__.__name__}: "
                         f"{str(error).splitlines()[0][:200]}") from None
    return client


def _field(key: str) -> tuple[str, ...]:
    """The path of a where-key in an index entry: a frame column (``ALIASES``) or a config path."""
    path = ALIASES.get(key, key if key.startswith(("config.", "info.")) else f"config.{key}")
    return tuple(path.split("."))


_MISSING = object()


def _lookup(entry: Mapping, path: tuple[str, ...]):
    value = entry
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def apply_where(entries: list[dict], where: Mapping[str, Any] | None, experiment: str) -> list[dict]:
    """The entries whose values equal ``where``'s (a list, tuple or set means any of its values); a key that no
    entry has is a QueryError."""
    for key, wanted in (where or {}).items():
        path = _field(key)
        if entries and all(_lookup(e, path) is _MISSING for e in entries):
            raise QueryError(f"unknown key {key!r}: no {experiment} run has {'.'.join(path)}; use a column "
                             f"({', '.join(ALIASES)}) or a config path such as training.lr")
        allowed = list(wanted) if isinstance(wanted, (list, tuple, set)) else [wanted]
        entries = [e for e in entries if any(_equal(_lookup(e, path), v) for v in allowed)]
    return entries


def _equal(value, wanted) -> bool:
    """Exact match; True does not match 1."""
    return type(value) is type(wanted) and value == wanted if isinstance(value, bool) or isinstance(wanted, bool) \
        else value == wanted


def _fetch(mongo_uri: str, db_name: str, experiment: str, where) -> list[dict]:
    """The index entries of ``experiment``'s runs matching ``where``, in run order.

    Two round trips: the number of runs (collection statistics, no scan) and every index document. When the two
    counts differ, runs were written by another observer or deleted: the index is synced first."""
    client = connect(mongo_uri)
    try:
        database = client[db_name]
        docs = list(database[run_index.COLLECTION].find({}))
        if len(docs) != database["runs"].estimated_document_count() or \
                any(doc.get("format") != run_index.FORMAT for doc in docs):
            try:
                run_index.sync(database)
            except pymongo.errors.OperationFailure:  # may not write: index the runs in memory (slower)
                runs = database["runs"].find({"experiment.name": experiment},
                                             {"experiment.sources": 0, "captured_out": 0, "host": 0, "meta": 0})
                return apply_where(sorted((run_index.entry(doc) for doc in runs), key=lambda e: e["_id"]), where,
                                   experiment)
            docs = list(database[run_index.COLLECTION].find({}))
        entries = sorted((run_index.decode(doc) for doc in docs if doc["experiment"] == experiment),
                         key=lambda e: e["_id"])
        return apply_where(entries, where, experiment)
    finally:
        client.close()


_PATHS = {column: tuple(path.split(".")) for column, path in ALIASES.items()}


def _config_columns(doc: Mapping, columns: list[str]) -> dict:
    row = {"run_id": doc["_id"], "status": doc.get("status"), "experiment": doc.get("experiment")}
    for column in columns:
        value = doc
        for part in _PATHS[column]:
            value = value.get(part) if isinstance(value, dict) else None
        row[column] = value
    row["condition"] = doc.get("condition")
    return row


def _array(values: list) -> np.ndarray:
    """A typed array when the values are all ints or all numbers, else an object array (strings, None, mixed)."""
    kinds = {type(v) for v in values}
    if kinds and kinds <= {int, float}:
        return np.asarray(values, dtype=np.int64 if kinds == {int} else np.float64)
    return np.asarray(values, dtype=object)


def load_runs(mongo_uri: str, db_name: str, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per (lottery run, round): config columns (``LOTTERY_CONFIG``), ``condition`` (the config hash
    without the seed: equal for the seeds of one condition), and the round record (``ROUND_FIELDS``).
    Runs of every status are returned (``status`` says which); a run still RUNNING has the rounds it finished."""
    columns = ["run_id", "status", "experiment", *LOTTERY_CONFIG, "condition", *ROUND_FIELDS]
    config: dict[str, list] = {c: [] for c in columns[:-len(ROUND_FIELDS)]}
    by_condition: dict[str, dict] = {}  # config columns but the seed are a function of the condition
    counts, arrays, lists = [], [], []
    for doc in _fetch(mongo_uri, db_name, "lottery", where):
        table = doc["tables"].get("rounds")
        if not table:
            continue
        shared = by_condition.get(doc["condition"])
        if shared is None:
            shared = by_condition[doc["condition"]] = _config_columns(doc, LOTTERY_CONFIG)
        for column in config:
            config[column].append(shared[column] if column not in ("run_id", "status", "seed") else
                                  doc["_id"] if column == "run_id" else doc["status"] if column == "status" else
                                  doc["config"].get("seed"))
        counts.append(table["n"])
        packed, other = run_index.table_arrays(table)
        arrays.append(packed)
        lists.append(other)
    data = {column: np.repeat(_array(values), counts) for column, values in config.items()}
    data.update(_round_columns(arrays, lists, counts))
    return pd.DataFrame(data, columns=columns)


def _round_columns(arrays: list[np.ndarray], lists: list[dict], counts: list[int]) -> dict[str, np.ndarray]:
    """ROUND_FIELDS over all runs. Packed columns concatenate in one operation when every run packed the same
    ones (the usual case); the rest (constants, plain lists, missing fields) go column by column."""
    same = bool(arrays) and all(a.dtype == arrays[0].dtype for a in arrays)
    merged = np.concatenate(arrays) if same else None
    columns = {}
    for field in ROUND_FIELDS:
        if same and field in (arrays[0].dtype.names or ()):
            columns[field] = merged[field]
            continue
        values: list = []
        for packed, other, n in zip(arrays, lists, counts):
            if field in other:
                values.extend(other[field])
            elif field in (packed.dtype.names or ()):
                column = packed[field]
                values.extend(run_index.hex_strings(column) if column.dtype.kind == "S" else column.tolist())
            else:
                values.extend([None] * n)
        columns[field] = _array(values)
    return {f: run_index.hex_strings(c) if c.dtype.kind == "S" else c for f, c in columns.items()}


def load_supermask_runs(mongo_uri: str, db_name: str, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per Supermask run: config columns (``SUPERMASK_CONFIG``), ``condition`` and ``SUPERMASK_FIELDS``."""
    docs = _fetch(mongo_uri, db_name, "supermask", where)
    rows = [{**_config_columns(doc, SUPERMASK_CONFIG), **{f: doc["info"].get(f) for f in SUPERMASK_FIELDS}}
            for doc in docs]
    columns = ["run_id", "status", "experiment", *SUPERMASK_CONFIG, "condition", *SUPERMASK_FIELDS]
    return pd.DataFrame(rows, columns=columns)
