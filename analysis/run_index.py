"""A compact index of the run database: what makes loading thousands of runs one fast query.

A Sacred run document is large (sources, host, captured output, ``info.rounds`` with four sha256 hex strings per
round), and a server decodes all of it, field by field, to answer even a projected query. Beside ``runs``, the
``run_index`` collection holds one small document per run, with the same ``_id``::

    {"_id": 7, "experiment": "lottery", "status": "COMPLETED", "format": 2, "entry": <BSON bytes>}

``entry`` is one BSON-encoded blob (a server passes it through without looking inside) holding ``config``,
``condition`` (``conditions.condition_hash(config, ignore_seed=True)``), ``info`` (the run's scalar info
values), the run's times, and ``tables``: every ``info`` value that is a list of records (``info.rounds``) as one
packed numpy structured array (numbers as int64/float64, booleans, sha256 hex strings as 32-byte digests), the
columns with one value in every row once (``consts``), and plain lists for the rest. Decoding gives back exactly
the values of the run document. Filters on config therefore run on the client, after one fetch.

ticketlab's observer writes the entry with the run (at start, on each heartbeat, at the end, and on upload after
an outage). ``sync`` adds entries for runs written by other observers and drops entries of deleted runs;
``analysis.load_runs`` calls it when the number of index documents differs from the number of runs.
"""

from __future__ import annotations

import binascii
import re
from typing import Any, Mapping

import bson
import numpy as np

from analysis.conditions import condition_hash

COLLECTION = "run_index"
FORMAT = 2
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def _kind(values: list) -> str | None:
    """The packed dtype of a column, or None when it stays a plain list."""
    if all(isinstance(v, bool) for v in values):
        return "?"
    if all(isinstance(v, int) and not isinstance(v, bool) and _INT64[0] <= v <= _INT64[1] for v in values):
        return "<i8"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "<f8"
    if all(isinstance(v, str) and _HEX64.match(v) for v in values):
        return "S32"
    return None


def _same(values: list) -> bool:
    return len(values) > 1 and all(type(v) is type(values[0]) and v == values[0] for v in values)


def encode_table(records: list[Mapping]) -> dict:
    """Records (dicts of scalars) as one packed structured array, constant columns and plain lists."""
    fields = list(dict.fromkeys(key for record in records for key in record))
    columns = {f: [r.get(f) for r in records] for f in fields}
    consts = {f: v[0] for f, v in columns.items() if _same(v)}
    kinds = {f: _kind(v) for f, v in columns.items() if f not in consts}
    packed = [f for f, kind in kinds.items() if kind]
    array = np.empty(len(records), dtype=[(f, kinds[f]) for f in packed])
    for f in packed:
        array[f] = [bytes.fromhex(v) for v in columns[f]] if kinds[f] == "S32" else columns[f]
    return {"n": len(records), "order": fields, "dtype": ";".join(f"{f}:{kinds[f]}" for f in packed),
            "data": bson.Binary(array.tobytes()), "consts": consts,
            "lists": {f: columns[f] for f, kind in kinds.items() if not kind}}


_DTYPES: dict[str, np.dtype] = {}


def table_arrays(table: Mapping) -> tuple[np.ndarray, dict[str, list]]:
    """(structured array of the packed columns, {field: list} of the others, constants repeated) of a table."""
    spec = table["dtype"]
    if spec not in _DTYPES:
        _DTYPES[spec] = np.dtype([tuple(item.split(":")) for item in spec.split(";")] if spec else [])
    n = table["n"]
    return np.frombuffer(table["data"], dtype=_DTYPES[spec]), \
        {**table["lists"], **{f: [v] * n for f, v in table["consts"].items()}}


def hex_strings(digests: np.ndarray) -> list[str]:
    """32-byte digests (dtype S32) as 64-character hex strings."""
    text = binascii.hexlify(np.ascontiguousarray(digests).tobytes()).decode()
    return [text[i:i + 64] for i in range(0, len(text), 64)]


def decode_table(table: Mapping) -> dict[str, list]:
    """The columns of an encoded table as Python lists, exactly as the records held them, in their order."""
    array, lists = table_arrays(table)
    out = {f: list(v) for f, v in lists.items()}
    for field in array.dtype.names or ():
        column = array[field]
        out[field] = hex_strings(column) if column.dtype.kind == "S" else column.tolist()
    return {f: out[f] for f in table["order"]}


def _is_table(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value) and \
        all(not isinstance(x, (Mapping, list)) for v in value for x in v.values())


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def entry(run: Mapping) -> dict:
    """The index entry of a Sacred run document (what ``decode`` gives back)."""
    info = run.get("info") or {}
    return {
        "_id": run["_id"], "experiment": (run.get("experiment") or {}).get("name"), "status": run.get("status"),
        "config": run.get("config") or {}, "condition": condition_hash(run.get("config") or {}, ignore_seed=True),
        "start_time": run.get("start_time"), "stop_time": run.get("stop_time"), "heartbeat": run.get("heartbeat"),
        "info": {k: v for k, v in info.items() if _is_scalar(v)},
        "tables": {k: encode_table(v) for k, v in info.items() if _is_table(v)},
    }


def document(run: Mapping) -> dict:
    """The ``run_index`` document of a Sacred run document."""
    item = entry(run)
    return {"_id": item["_id"], "experiment": item["experiment"], "status": item["status"], "format": FORMAT,
            "entry": bson.Binary(bson.encode({k: v for k, v in item.items() if k not in ("_id", "experiment",
                                                                                         "status")}))}


def decode(doc: Mapping) -> dict:
    """The entry of a ``run_index`` document."""
    return {"_id": doc["_id"], "experiment": doc["experiment"], "status": doc["status"], **bson.decode(doc["entry"])}


def write(database, run: Mapping) -> None:
    """Store (replace) the index document of ``run`` in ``database``."""
    database[COLLECTION].replace_one({"_id": run["_id"]}, document(run), upsert=True)


def sync(database) -> tuple[int, int]:
    """Index the runs that have no entry (or an entry of an older format), drop entries whose run is gone;
    returns (added, dropped)."""
    run_ids = {doc["_id"] for doc in database["runs"].find({}, {"_id": 1})}
    indexed = {doc["_id"] for doc in database[COLLECTION].find({"format": FORMAT}, {"_id": 1})}
    stale = indexed - run_ids
    database[COLLECTION].delete_many({"$or": [{"_id": {"$in": list(stale)}}, {"format": {"$ne": FORMAT}}]})
    missing = sorted(run_ids - indexed)
    for start in range(0, len(missing), 200):
        batch = database["runs"].find({"_id": {"$in": missing[start:start + 200]}},
                                      {"experiment.sources": 0, "captured_out": 0, "host": 0, "meta": 0})
        documents = [document(run) for run in batch]
        if documents:
            database[COLLECTION].insert_many(documents)
    return len(missing), len(stale)

