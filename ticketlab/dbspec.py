"""How every ticketlab command names a run database (experiments, sweep, upload, omniboard, analysis, localdb).

One spec, three forms::

    -m HOST:PORT:DB                                            127.0.0.1:27017:lottery
    -m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin   a server with authentication (DB in the path)
    (no -m)  $TICKETLAB_MONGO_URI                              the same URI form, from the environment

``-m DB`` alone names a database on the server of ``$TICKETLAB_MONGO_URI`` (or on localhost:27017). A password
is never printed, logged or stored: ``scrub`` masks it in any text, ``DbSpec.display`` is the spec without it.
Pure Python (pymongo's URI parser only): the analysis uses it too.

    spec = parse(args.mongo_db)            # DbSpec(url=..., db_name=...); a bad spec is a one-line ValueError
    client = connect(spec.url)             # journaled writes, the server timeout of $TICKETLAB_DB_TIMEOUT_MS
    print(f"runs in {spec.display}")       # never spec.url
"""

from __future__ import annotations

import dataclasses
import os
import re

URI_VARIABLE = "TICKETLAB_MONGO_URI"
TIMEOUT_VARIABLE = "TICKETLAB_DB_TIMEOUT_MS"
DEFAULT_SERVER = "localhost:27017"
FORMS = f"HOST:PORT:DB (e.g. 127.0.0.1:27017:lottery), mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin, or " \
        f"DB with ${URI_VARIABLE} set"
_DB = r"[A-Za-z_][0-9A-Za-z_\-]{0,63}"
_HOST_PORT_DB = re.compile(rf"^(?P<host>[0-9A-Za-z.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{{1,5}}):(?P<db>{_DB})$")
_DB_ONLY = re.compile(rf"^{_DB}$")
_PASSWORD = re.compile(r"(mongodb(?:\+srv)?://[^:/@\s]*:)([^@\s]*)(@)")


class DbSpecError(ValueError):
    """A database spec that names no database or is malformed; the message says which forms are valid."""


@dataclasses.dataclass(frozen=True, repr=False)
class DbSpec:
    url: str  # a mongodb:// URI to connect with (may hold a password: never print it)
    db_name: str

    @property
    def display(self) -> str:
        """The spec as it may be printed: the URI without its password, and the database."""
        return f"{scrub(self.url)} database {self.db_name!r}"

    @property
    def uri_with_db(self) -> str:
        """``url`` with the database in its path (for tools that take one URI, such as Omniboard's ``--mu``)."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        return urlunsplit((parts.scheme, parts.netloc, f"/{self.db_name}", parts.query, ""))

    @property
    def option(self) -> str:
        """The ``-m`` value that names this database, as it may be printed: ``HOST:PORT:DB`` for a plain server,
        else the URI with the database and its password as ``***``."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        if parts.scheme == "mongodb" and "@" not in parts.netloc and not parts.query and "," not in parts.netloc \
                and parts.port:
            return f"{parts.hostname}:{parts.port}:{self.db_name}"
        return scrub(self.uri_with_db)

    def __repr__(self) -> str:
        return f"DbSpec({scrub(self.url)!r}, {self.db_name!r})"

    def observer_kwargs(self) -> dict:
        """Arguments of Sacred's MongoObserver (and ticketlab's)."""
        return {"url": self.url, "db_name": self.db_name}


def scrub(text: str) -> str:
    """``text`` with the password of every MongoDB URI in it replaced by ``***``."""
    return _PASSWORD.sub(r"\1***\3", str(text))


def scrub_all(value):
    """A copy of ``value`` (dicts, lists, strings) with every password in a MongoDB URI replaced by ``***``."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: scrub_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scrub_all(v) for v in value)
    return value


def _uri_database(uri: str) -> tuple[str, str | None]:
    from pymongo.errors import InvalidURI
    from pymongo.uri_parser import parse_uri

    if uri.startswith("mongodb+srv://"):  # parsing would look the host up in DNS: read the path only
        path = uri.split("://", 1)[1].split("?", 1)[0]
        return uri, (path.split("/", 1)[1] if "/" in path else "") or None
    try:
        parsed = parse_uri(uri, validate=False)
    except (InvalidURI, ValueError) as error:
        raise DbSpecError(f"database spec {scrub(uri)!r} is not a valid MongoDB URI ({scrub(error)}); use "
                          f"{FORMS}") from None
    return uri, parsed.get("database")


def parse(spec: str | None = None, db_name: str | None = None) -> DbSpec:
    """The database a ``-m`` spec names (``$TICKETLAB_MONGO_URI`` when ``spec`` is None or empty).

    ``db_name`` names the database when the spec is a server only (``HOST:PORT`` or a URI without a path)."""
    if not spec:
        spec = os.environ.get(URI_VARIABLE, "")
        if not spec:
            raise DbSpecError(f"no run database named: give -m {FORMS.split(', or DB')[0]}, or set "
                              f"${URI_VARIABLE}")
    spec = spec.strip()
    if "://" in spec:
        url, name = _uri_database(spec)
    elif match := _HOST_PORT_DB.match(spec):
        url, name = f"mongodb://{match['host']}:{match['port']}", match["db"]
    elif _DB_ONLY.match(spec) and not db_name:
        server = os.environ.get(URI_VARIABLE) or DEFAULT_SERVER
        url = server if "://" in server else f"mongodb://{server}"
        url, name = _uri_database(url)[0], spec
    elif re.match(r"^[0-9A-Za-z.\-]+:\d{1,5}$", spec):  # HOST:PORT, with db_name
        url, name = f"mongodb://{spec}", None
    else:
        raise DbSpecError(f"database spec {scrub(spec)!r} is not valid; use {FORMS}")
    name = db_name or name
    if not name:
        raise DbSpecError(f"database spec {scrub(spec)!r} names no database; put it in the URI's path "
                          f"(mongodb://HOST:PORT/DB?...) or use HOST:PORT:DB")
    return DbSpec(url, name)


def server_timeout_ms() -> int:
    """How long one database call waits for an unreachable server ($TICKETLAB_DB_TIMEOUT_MS, default 5000)."""
    return int(os.environ.get(TIMEOUT_VARIABLE, "5000"))


def connect(url: str, **kwargs):
    """A pymongo client of the run database whose acknowledged writes survive a crash of the server.

    Writes wait for the server's journal (``journal=True``): without it MongoDB keeps acknowledged writes in
    memory for up to its 100 ms journal interval, and SecantusDB loses the last few dozen writes when it is killed
    (measured: 171 of 200 inserts left after SIGKILL, 200 of 200 with the journal). A lost claim or run document
    after a database crash is how a finished point would be run twice. A write takes about 40% longer on the
    local server (measured side by side), nothing a run notices."""
    import pymongo

    kwargs.setdefault("serverSelectionTimeoutMS", server_timeout_ms())
    kwargs.setdefault("journal", True)
    return pymongo.MongoClient(url, **kwargs)


def unreachable(spec: DbSpec, error: BaseException) -> str:
    """One line saying a database cannot be reached, and why (pymongo's topology description left out)."""
    text = str(error)
    reason = re.search(r"\[Errno -?\d+\] ([^,(\]]+)", text) or re.search(r"(timed out|Authentication failed)",
                                                                         text, re.I)
    why = f"{error.__class__.__name__}: {reason.group(1).strip()}" if reason else error.__class__.__name__
    return f"cannot reach the run database at {scrub(spec.url)} (database {spec.db_name!r}; {why}); start a " \
           f"local one with: ticketlab db start"
