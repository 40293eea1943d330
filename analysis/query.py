"""The run database as tidy pandas frames, read from Sacred's ``runs`` collection at the time of the call.

``load_runs`` returns one row per (lottery run, finished round); ``load_supermask_runs`` one row per Supermask
run (both are ``load_kind``: the frame of any kind of experiment, ``ticketlab.kinds``); ``load_curves`` the learning curves (Sacred's ``metrics`` collection) of chosen runs. Each is one projected
``find`` on the collection Sacred writes: what any writer put there (ticketlab's observer, Sacred's own
MongoObserver, another client's update or delete, a run still RUNNING) is what comes back, with no cache.
``where`` filters run on the server (``$in`` on the config path), then exactly on the client (``True`` is not
``1``; no substrings).

Columns: ``run_id``, ``status``, ``experiment``, every config value (short names from
``ticketlab.schema.CONFIG_COLUMNS`` such as ``criterion``, ``arch``, ``seed``; every other value under its dotted
path, such as ``training.eval_every``), ``condition`` (``ticketlab.identity.condition_hash``: equal for the seeds of
one condition), ``science`` (the science version that made the run, ``unknown`` before runs recorded it) and the
fields of the kind's record (``ticketlab.schema.ROUND_FIELDS``, ``SUPERMASK_FIELDS``, ...).

When to use which: these frames for tables, statistics and figures over many runs; incense
(``incense.ExperimentLoader(mongo_uri, db_name).find_by_id(run_id)``) to open one run as an object and download
its artifacts (``exp.artifacts["round_03.pt"].content``).
"""

from __future__ import annotations

import operator
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import pymongo
import pymongo.errors

from ticketlab import dbspec, kinds
from ticketlab.identity import condition_hash, version_of
from ticketlab.schema import CONFIG_COLUMNS, column_of, flatten, path_of

# frame columns that are run fields, not config: column -> run document field
RUN_FIELDS = {"run_id": "_id", "status": "status", "experiment": "experiment.name"}


class QueryError(ValueError):
    """A query that cannot be answered (unreachable database, unknown key, nothing found); the message says why."""


def resolve(mongo: str | dbspec.DbSpec | None, db_name: str | None = None) -> dbspec.DbSpec:
    """The database of ``mongo`` (a ``-m`` spec, a URI, ``HOST:PORT`` with ``db_name``, or None for
    ``$TICKETLAB_MONGO_URI``)."""
    if isinstance(mongo, dbspec.DbSpec):
        return mongo if not db_name else dbspec.DbSpec(mongo.url, db_name)
    try:
        return dbspec.parse(mongo, db_name)
    except dbspec.DbSpecError as error:
        raise QueryError(str(error)) from None


def connect(spec: dbspec.DbSpec) -> pymongo.MongoClient:
    """A client of ``spec``'s server that has answered a ping (QueryError in one line otherwise)."""
    try:
        client = dbspec.connect(spec.url)
        client.admin.command("ping")
    except (pymongo.errors.PyMongoError, ValueError) as error:
        raise QueryError(dbspec.unreachable(spec, error)) from None
    return client


def _field(key: str) -> str:
    """The run document field of a where-key: a run field, a frame column, a config path or an ``info.`` path."""
    if key in RUN_FIELDS:
        return RUN_FIELDS[key]
    if key.startswith("info."):
        return key
    return "config." + path_of(key)


def _equal(value, wanted) -> bool:
    """Exact match; True does not match 1."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return type(value) is type(wanted) and value == wanted
    return value == wanted


def _lookup(doc: Mapping, field: str):
    value = doc
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


_MISSING = object()


def _server_values(values: list) -> list:
    """The values to ask the server for: numbers in both int and float form (the client then matches exactly)."""
    out = []
    for v in values:
        out.append(v)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer():
            out += [int(v), float(v)]
    return out


def _check_keys(runs, spec: dbspec.DbSpec, wanted: Mapping[str, list]) -> None:
    """A QueryError for a where-key that no run of any experiment has, naming the columns the database does have.
    A key that only some experiments have is not an error: runs without it do not match (``supermask`` runs have
    no ``rounds``; ``where={"rounds": 8}`` selects lottery runs)."""
    for key in wanted:
        if runs.find_one({_field(key): {"$exists": True}}, {"_id": 1}) is None and \
                runs.find_one({}, {"_id": 1}) is not None:
            present = [c for c, path in CONFIG_COLUMNS.items()
                       if runs.find_one({f"config.{path}": {"$exists": True}}, {"_id": 1}) is not None]
            raise QueryError(f"unknown key {key!r}: no run in database {spec.db_name!r} has {_field(key)}; use a "
                             f"column ({', '.join([*RUN_FIELDS, *present])}) or a config path such as training.lr")


def _find(mongo, db_name, experiment: str, where: Mapping[str, Any] | None, projection: dict) -> list[dict]:
    """The run documents of ``experiment`` matching ``where``, sorted by run id (one ``find``)."""
    spec = resolve(mongo, db_name)
    wanted = {key: list(v) if isinstance(v, (list, tuple, set)) else [v] for key, v in (where or {}).items()}
    query: dict[str, Any] = {"experiment.name": experiment}
    for key, values in wanted.items():
        query.setdefault(_field(key), {"$in": _server_values(values)})
    client = connect(spec)
    try:
        runs = client[spec.db_name]["runs"]
        try:
            docs = list(runs.find(query, projection).sort("_id", 1))
            if not docs and wanted:
                _check_keys(runs, spec, wanted)
        except pymongo.errors.PyMongoError as error:
            raise QueryError(dbspec.unreachable(spec, error)) from None
    finally:
        client.close()
    for key, values in wanted.items():
        field = _field(key)
        docs = [d for d in docs if any(_equal(_lookup(d, field), v) for v in values)]
    return docs


def _array(values: list) -> np.ndarray:
    """A typed array when the values are all ints or all numbers, else an object array (strings, None, mixed)."""
    kinds = set(map(type, values))
    try:
        if kinds and kinds <= {int, float}:
            return np.asarray(values, dtype=np.int64 if kinds == {int} else np.float64)
    except OverflowError:  # an int beyond int64: kept as it is
        pass
    if kinds == {bool}:
        return np.asarray(values, dtype=bool)
    return np.fromiter(values, dtype=object, count=len(values))


def _cell(value):
    """A config value as a frame cell: lists and dicts as tuples (hashable, comparable)."""
    if isinstance(value, list):
        return tuple(_cell(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _cell(v)) for k, v in value.items()))
    return value


def _run_columns(docs: list[dict]) -> dict[str, list]:
    """run_id, status, experiment, every config value (short or dotted column) and condition, one value per run."""
    flats = [flatten(doc.get("config") or {}) for doc in docs]
    paths = list(dict.fromkeys(path for flat in flats for path in flat))
    short = [p for p in CONFIG_COLUMNS.values() if p in paths]
    ordered = short + sorted(p for p in paths if p not in short)
    columns: dict[str, list] = {
        "run_id": [d["_id"] for d in docs], "status": [d.get("status") for d in docs],
        "experiment": [(d.get("experiment") or {}).get("name") for d in docs]}
    for path in ordered:
        columns[column_of(path)] = [_cell(flat.get(path)) for flat in flats]
    columns["condition"] = [condition_hash(flat) for flat in flats]
    columns["science"] = [version_of(doc) for doc in docs]
    return columns


def _empty(*columns: str) -> dict[str, list]:
    """The columns of a frame of no runs: run and config columns, ``condition``, ``science`` and ``columns``."""
    return {"run_id": [], "status": [], "experiment": [], **{c: [] for c in CONFIG_COLUMNS}, "condition": [],
            "science": [], **{c: [] for c in columns}}


def load_kind(experiment: str, mongo: str | None = None, db_name: str | None = None,
              where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """The results of the runs of one kind (``ticketlab.kinds``): for a kind with a record per round (lottery runs),
    one row per (run, round it finished); else one row per run (its record's fields None until it finishes). Run and
    config columns, ``condition``, ``science`` and the record's fields (``Kind.fields``)."""
    return _load_kind(experiment, mongo, db_name, where)[0]


def _load_kind(experiment: str, mongo, db_name, where) -> tuple[pd.DataFrame, list]:
    """``load_kind``'s frame, and the ids of the runs it read (those without a finished round too)."""
    kind = kinds.get(experiment)
    fields = kind.fields
    if not kind.per_round:
        docs = _find(mongo, db_name, kind.name, where, {"status": 1, "experiment.name": 1, "config": 1,
                                                        "info.science": 1, **{f"info.{f}": 1 for f in fields}})
        data: dict[str, Any] = {c: _array(v) for c, v in _run_columns(docs).items()} if docs else _empty()
        for field in fields:
            data[field] = _array([(d.get("info") or {}).get(field) for d in docs])
        return pd.DataFrame(data), [d["_id"] for d in docs]
    docs = _find(mongo, db_name, kind.name, where,
                 {"status": 1, "experiment.name": 1, "config": 1, "info.rounds": 1, "info.science": 1})
    records = [((d.get("info") or {}).get("rounds") or []) for d in docs]
    counts = [len(r) for r in records]
    data = {column: np.repeat(_array(values), counts) for column, values in _run_columns(docs).items()} if docs \
        else _empty()
    for field, values in zip(fields, _record_columns([record for run in records for record in run], fields)):
        data[field] = _array(values)
    return pd.DataFrame(data), [d["_id"] for d in docs]


def load_runs(mongo: str | None = None, db_name: str | None = None, where: Mapping[str, Any] | None = None,
              metrics: bool | Iterable[str] | None = None):
    """One row per (lottery run, round it finished): run and config columns, ``condition``, ``ROUND_FIELDS``.

    ``mongo``: a ``-m`` spec (``HOST:PORT:DB``, ``mongodb://.../DB``), a server URI with ``db_name``, or None for
    ``$TICKETLAB_MONGO_URI``. ``where``: {column or config path: value or list of values}.
    Runs of every status are returned (``status`` says which); a run still RUNNING has the rounds it finished, a
    run with no finished round has no row. ``metrics=True`` (every metric) or a list of metric names also loads
    the learning curves of these runs: the result is then ``(runs, curves)`` (see ``load_curves``)."""
    runs, ids = _load_kind("lottery", mongo, db_name, where)
    if metrics is None or metrics is False:
        return runs
    return runs, load_curves(mongo, db_name, ids, None if metrics is True else list(metrics))


def load_supermask_runs(mongo: str | None = None, db_name: str | None = None,
                        where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per Supermask run: run and config columns, ``condition`` and ``SUPERMASK_FIELDS`` (None while the
    run has not finished)."""
    return load_kind("supermask", mongo, db_name, where)


def _record_columns(records: list[dict], fields: list[str]) -> list[tuple]:
    """The ``fields`` columns of round records (None where a record lacks a field)."""
    if not records:
        return [()] * len(fields)
    getter = operator.itemgetter(*fields) if len(fields) > 1 else lambda record: (record[fields[0]],)
    try:
        return list(zip(*map(getter, records)))
    except KeyError:  # a record without some field (an older run, another writer): slower, same result
        return [tuple(record.get(field) for record in records) for field in fields]


def load_run_list(mongo: str | None = None, db_name: str | None = None, where: Mapping[str, Any] | None = None,
                  experiment: str = "lottery") -> pd.DataFrame:
    """One row per run of ``experiment``, whatever its status and whether or not it finished a round (a run
    killed in round 0 is here; ``load_runs`` has rows for finished rounds only): run and config columns,
    ``condition``, ``heartbeat`` (Sacred's last beat, UTC; None before the first) and the kind's listed results
    (``Kind.results``): for a kind with rounds, ``rounds_done`` and the last finished round's (NaN before round 0),
    else the run's (None before it finishes)."""
    kind = kinds.get(experiment)
    where_results = "info.rounds." if kind.per_round else "info."
    results = {f"{where_results}{f}": 1 for f in (("round", *kind.results) if kind.per_round else kind.results)}
    docs = _find(mongo, db_name, kind.name, where, {"status": 1, "experiment.name": 1, "config": 1,
                                                    "heartbeat": 1, "start_time": 1, "info.science": 1, **results})
    listed = (("rounds_done",) if kind.per_round else ()) + kind.results
    if not docs:
        return pd.DataFrame(_empty("heartbeat", *listed))
    data: dict[str, Any] = {c: _array(v) for c, v in _run_columns(docs).items()}
    data["heartbeat"] = [d.get("heartbeat") or d.get("start_time") for d in docs]
    infos = [d.get("info") or {} for d in docs]
    if kind.per_round:
        last = [(info.get("rounds") or [{}])[-1] for info in infos]
        data["rounds_done"] = _array([len(info.get("rounds") or []) for info in infos])
        for field in kind.results:
            data[field] = np.asarray([r.get(field, np.nan) for r in last], dtype=np.float64)
    else:
        for field in kind.results:
            data[field] = _array([info.get(field) for info in infos])
    return pd.DataFrame(data)


def load_curves(mongo: str | None = None, db_name: str | None = None, run_ids: Iterable[int] | None = None,
                names: Iterable[str] | None = None) -> pd.DataFrame:
    """The learning curves (Sacred's ``metrics`` collection) of ``run_ids`` (all runs when None): one row per
    (run_id, name, step) with ``value`` and ``timestamp``, sorted. ``names`` selects metrics (``val_acc``,
    ``train_loss``, ``round.test_acc``, ...)."""
    spec = resolve(mongo, db_name)
    query: dict[str, Any] = {}
    if run_ids is not None:
        query["run_id"] = {"$in": [int(r) for r in run_ids]}
    if names is not None:
        query["name"] = {"$in": list(names)}
    client = connect(spec)
    try:
        docs = list(client[spec.db_name]["metrics"].find(query, {"run_id": 1, "name": 1, "steps": 1, "values": 1,
                                                                  "timestamps": 1}))
    except pymongo.errors.PyMongoError as error:
        raise QueryError(dbspec.unreachable(spec, error)) from None
    finally:
        client.close()
    counts = [len(d.get("steps") or []) for d in docs]
    curves = pd.DataFrame({
        "run_id": np.repeat(np.asarray([d["run_id"] for d in docs], dtype=np.int64), counts),
        "name": np.repeat(np.asarray([d["name"] for d in docs], dtype=object), counts),
        "step": _array([s for d in docs for s in d.get("steps") or []]).astype(np.int64),
        "value": _array([v for d in docs for v in d.get("values") or []]).astype(np.float64),
        "timestamp": pd.to_datetime([t for d in docs for t in (d.get("timestamps") or [None] * len(d["steps"]))]),
    })
    return curves.sort_values(["run_id", "name", "step"], kind="stable").reset_index(drop=True)
