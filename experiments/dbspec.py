"""The ``-m`` database spec shared by every ticketlab command: ``[HOST:PORT:]DB`` as Sacred parses it."""

from __future__ import annotations

from sacred.observers.mongo import parse_mongo_db_arg


def parse_db_spec(spec: str) -> tuple[str, str]:
    """(MongoDB URL, database name) of ``HOST:PORT:DB`` (or ``DB`` on localhost:27017)."""
    try:
        parsed = parse_mongo_db_arg(spec)
    except (AttributeError, ValueError):  # sacred's own check dereferences None on a non-matching spec
        raise ValueError(f"database spec {spec!r} is not valid; use HOST:PORT:DB, e.g. 127.0.0.1:27017:lottery") \
            from None
    return "mongodb://" + parsed.get("url", "localhost:27017"), parsed.get("db_name", "sacred")
