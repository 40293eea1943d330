"""Omniboard on a run database, with ticketlab's tags and columns already there.

    python -m experiments.omniboard -m 127.0.0.1:27017:lottery [--port 9000]
    python -m experiments.omniboard -m "mongodb://user:pw@host:27017/lottery?authSource=admin"
    TICKETLAB_MONGO_URI="mongodb://user:pw@host:27017/lottery?authSource=admin" python -m experiments.omniboard

The database is named as for every ticketlab command (``ticketlab.dbspec``: ``-m HOST:PORT:DB``, ``-m`` a
MongoDB URI, or ``$TICKETLAB_MONGO_URI``; ``--mu URI`` is a deprecated spelling of ``-m URI``). Omniboard gets the
connection string through a pipe, never on a command line (``ps``) or in the environment it starts with
(``/proc/PID/environ``, readable by the same user): ``omniboard_bind.js``, loaded before Omniboard, reads it from
the pipe and sets it as Omniboard's ``MONGO_URI`` inside the Node process, and removes it again once Omniboard has
read it. Omniboard 2.16.1's own ways (``dist/config/configFile.js``) would each show the password: ``-m`` and
``--mu`` in ``ps``, ``MONGO_URI`` in ``/proc/PID/environ``, and ``OMNIBOARD_CONFIG`` names a file it reads at
start and leaves on disk.

Omniboard shows a run's config one level deep. ticketlab's observer tags every run with what tells it apart
(``schema.TAG_GROUPS``: a lottery run's criterion, mask-1/mask-0, data set and arch/seed; a Supermask's variant,
start, data set and arch/seed; Omniboard's Tags column, near the left of the run list). This command gives older
runs the same tags (keeping tags added by hand), makes the rows tall enough for the Tags cell to show four
(``schema.ROW_HEIGHT``: Omniboard's ``row_height`` setting, when still at its default) and writes (idempotently)
into Omniboard's own settings collections:

* ``omniboard.custom.columns`` (``schema.CUSTOM_COLUMNS``): Criterion, Mask-1, Mask-0 (lottery), Start and Density
  (Supermask), Arch, Data, Rounds and Iterations, read at ``config.criterion.name``, ...,
  ``info.expected_density`` (Omniboard needs the ``config.`` or ``info.`` prefix; columns an older ticketlab wrote
  without it are repaired);
* ``omniboard.metric.columns`` (``schema.METRIC_COLUMNS``): the best test accuracy over rounds (``round.test_acc``,
  max) and the best untrained Supermask accuracy (``round.untrained_test_acc``, max). The run's Result column is
  the last round's test accuracy of a lottery run, the test accuracy (mean over mask samples) of a Supermask.

Omniboard places new columns after the run fields and the config; it keeps the order a user gives the columns (drag
a header) in the browser's local storage, so the server cannot bring them forward (the README says how, once).

Omniboard itself is the npm package pinned in ``package.json`` (``make setup`` installs it into
``node_modules/``). It serves the run list at ``http://127.0.0.1:PORT/sacred`` (no trailing slash) and its API under
``/sacred/api/v1/``; this command prints that address and runs until interrupted. It listens on 127.0.0.1 only
(``--host`` changes that; from another machine, use an SSH tunnel: ``ssh -L 9000:127.0.0.1:9000 server``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pymongo.errors

from experiments.observers import ResilientMongoObserver
from ticketlab import dbspec
from ticketlab import schema
from ticketlab.cli import Parser, add_database

ROOT = Path(__file__).resolve().parent.parent
URI_FD_VARIABLE = "TICKETLAB_OMNIBOARD_URI_FD"  # the pipe omniboard_bind.js reads the connection string from
# variables Omniboard would take its database from, or that hold a password it does not need: not passed on
HIDDEN_VARIABLES = (dbspec.URI_VARIABLE, "MONGO_URI", "OMNIBOARD_CONFIG")


def ensure_columns(database) -> None:
    """Write ticketlab's columns (``schema.CUSTOM_COLUMNS``, ``schema.METRIC_COLUMNS``) into Omniboard's settings
    collections. A column the user changed is left as it is; one written by an older ticketlab without the
    ``config.`` prefix (which Omniboard showed empty) is repaired."""
    columns = database["omniboard.custom.columns"]
    for name, path in schema.CUSTOM_COLUMNS:
        columns.update_one({"name": name, "config_path": path.removeprefix("config.")}, {"$set": {"config_path": path}})
        columns.update_one({"name": name}, {"$setOnInsert": {"config_path": path}}, upsert=True)
    for name, metric, extremum in schema.METRIC_COLUMNS:
        database["omniboard.metric.columns"].update_one(
            {"name": name}, {"$setOnInsert": {"metric_name": metric, "extrema": extremum}}, upsert=True)


def ensure_row_height(database) -> None:
    """Rows tall enough for the Tags cell to show every tag (``schema.ROW_HEIGHT``), unless the user chose a row
    height (Omniboard's settings, gear menu) other than Omniboard's default."""
    database["omniboard.settings"].update_one(
        {"name": "row_height", "value": {"$in": [schema.OMNIBOARD_DEFAULT_ROW_HEIGHT, None]}},
        {"$set": {"value": schema.ROW_HEIGHT}}, upsert=False)
    database["omniboard.settings"].update_one({"name": "row_height"},
                                              {"$setOnInsert": {"value": schema.ROW_HEIGHT}}, upsert=True)


def ensure_tags(database) -> int:
    """Give every run ticketlab's Omniboard tags as the observer does (runs written by another observer have none,
    runs of older versions one tag per value, Supermask runs of older versions lottery's groups), keeping the tags
    a user added in Omniboard; returns how many runs changed."""
    changed = 0
    for run in database["runs"].find({}, {"config": 1, "experiment.name": 1, "omniboard.tags": 1}):
        config, experiment = run.get("config", {}), (run.get("experiment") or {}).get("name")
        ours = ResilientMongoObserver.tags(config, experiment)
        former = ResilientMongoObserver.tag_values(config)  # older versions gave every run lottery's groups
        stale = set(ours) | set(ResilientMongoObserver.tags(config)) | {text for group in former for text, _ in group}
        old = (run.get("omniboard") or {}).get("tags") or []
        tags = ours + [t for t in old if t not in stale]
        if tags != old:
            database["runs"].update_one({"_id": run["_id"]}, {"$set": {"omniboard.tags": tags}})
            changed += 1
    return changed


def omniboard_command() -> list[str]:
    start = ROOT / "node_modules" / "omniboard" / "dist" / "start.js"
    node = shutil.which("node")
    if not start.exists() or not node:
        raise FileNotFoundError(f"Omniboard is not installed: run `make setup` (needs node and npm; installs the "
                                f"version pinned in {ROOT / 'package.json'} into {ROOT / 'node_modules'})")
    return [node, "-r", str(Path(__file__).with_name("omniboard_bind.js")), str(start)]


def url(port: int) -> str:
    """The run list's address. Without a trailing slash: from ``.../sacred/`` the app requests
    ``/sacred/sacred/api/...`` and stays at "Loading app..." forever."""
    return f"http://127.0.0.1:{port}/sacred"


def connection_pipe(uri: str) -> int:
    """The read end of a pipe that holds ``uri`` and is closed for writing, inherited by the program this process
    becomes (``omniboard_bind.js`` reads it)."""
    read, write = os.pipe()
    try:
        os.write(write, uri.encode())  # far below the pipe's buffer (64 KiB): never blocks
    finally:
        os.close(write)
    os.set_inheritable(read, True)
    return read


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.omniboard", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group()
    add_database(where)
    where.add_argument("--mu", metavar="URI", help="deprecated: the same as -m URI")
    parser.add_argument("--port", type=int, default=9000, help="Omniboard's port (default 9000)")
    parser.add_argument("--host", default="127.0.0.1", help="the address Omniboard listens on (default 127.0.0.1: "
                        "this machine only; reach it from elsewhere through an SSH tunnel, ssh -L 9000:127.0.0.1:9000)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"argument --port: {args.port} is not a TCP port (1 to 65535)")
    spec = parser.database(args, args.mu or args.mongo_db)
    try:
        command = omniboard_command()
        with dbspec.connect(spec.url) as client:
            ensure_columns(client[spec.db_name])
            ensure_row_height(client[spec.db_name])
            ensure_tags(client[spec.db_name])
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except pymongo.errors.PyMongoError as error:
        print(f"error: {dbspec.unreachable(spec, error)}", file=sys.stderr)
        return 2
    print(f"Omniboard for {spec.display}: {url(args.port)}  (Ctrl-C stops it)", flush=True)
    env = {name: value for name, value in os.environ.items() if name not in HIDDEN_VARIABLES}
    env.update(PORT=str(args.port), OMNIBOARD_HOST=args.host,
               **{URI_FD_VARIABLE: str(connection_pipe(spec.uri_with_db))})
    os.chdir(ROOT)  # become Omniboard (exec): a signal to this process reaches it, no child is left behind
    os.execve(command[0], command, env)


if __name__ == "__main__":
    sys.exit(main())
