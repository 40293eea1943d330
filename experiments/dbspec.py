"""The ``-m`` database spec shared by every ticketlab command: ``[HOST:PORT:]DB`` as Sacred parses it.

A lab server with authentication is reached through ``TICKETLAB_MONGO_URI`` (e.g.
``mongodb://user:password@mongo:27017/?authSource=admin``): a spec that names only the database (``-m lottery``)
then goes to that server instead of localhost.
"""

from __future__ import annotations

import os

from sacred.observers.mongo import parse_mongo_db_arg

URI_VARIABLE = "TICKETLAB_MONGO_URI"


def observer_kwargs(spec: str) -> dict:
    """MongoObserver arguments (url, db_name, ...) of a ``-m`` spec."""
    try:
        kwargs = parse_mongo_db_arg(spec)
    except (AttributeError, ValueError):  # sacred's own check dereferences None on a non-matching spec
        raise ValueError(f"database spec {spec!r} is not valid; use HOST:PORT:DB, e.g. 127.0.0.1:27017:lottery, "
                         f"or DB with {URI_VARIABLE} set") from None
    if "url" not in kwargs and os.environ.get(URI_VARIABLE):
        kwargs["url"] = os.environ[URI_VARIABLE]
    return kwargs


def parse_db_spec(spec: str) -> tuple[str, str]:
    """(MongoDB URL, database name) of ``HOST:PORT:DB``, or of ``DB`` on $TICKETLAB_MONGO_URI or localhost."""
    kwargs = observer_kwargs(spec)
    url = kwargs.get("url", "localhost:27017")
    return (url if "://" in url else "mongodb://" + url), kwargs.get("db_name", "sacred")
