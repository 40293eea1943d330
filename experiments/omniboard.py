"""Omniboard on a run database, with ticketlab's columns already there.

    python -m experiments.omniboard -m 127.0.0.1:27017:lottery [--port 9000]
    python -m experiments.omniboard --mu "mongodb://user:pw@host:27017/lottery?authSource=admin"

Omniboard shows a run's config one level deep. ticketlab's observer tags every run with its criterion, mask-1
and mask-0 actions, arch, data set and seed (Omniboard's Tags column, near the left of the run list); this
command tags older runs the same way and writes (idempotently) into Omniboard's own settings collections:

* ``omniboard.custom.columns``: Arch, Data, Criterion, Mask-1, Mask-0, Rounds and Iterations, read from the
  nested config paths (``criterion.name``, ``treatment.mask1``, ...); the seed is a top-level config key, which
  Omniboard shows as it is;
* ``omniboard.metric.columns``: the best test accuracy over rounds (``round.test_acc``, max) and the best
  untrained Supermask accuracy (``round.untrained_test_acc``, max). The run's Result column is the last round's
  test accuracy (the lottery experiment returns it).

Omniboard itself is the npm package pinned in ``package.json`` (``make setup`` installs it into
``node_modules/``). It serves the run list at ``http://127.0.0.1:PORT/sacred/`` and its API under
``/sacred/api/v1/``; this command prints the address and runs until interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlparse

import pymongo
import pymongo.errors

from experiments.dbspec import parse_db_spec
from experiments.observers import ResilientMongoObserver

ROOT = Path(__file__).resolve().parent.parent
# Column names differ from the config's top-level keys (Omniboard already shows those, as whole dictionaries).
CUSTOM_COLUMNS = [  # (column name, config path)
    ("Arch", "arch.name"), ("Data", "data.name"), ("Criterion", "criterion.name"), ("Mask-1", "treatment.mask1"),
    ("Mask-0", "treatment.mask0"), ("Rounds", "pruning.rounds"), ("Iterations", "training.iterations"),
]
METRIC_COLUMNS = [  # (column name, metric name, extremum)
    ("Best test acc", "round.test_acc", "max"), ("Best untrained acc", "round.untrained_test_acc", "max"),
]


def ensure_columns(database) -> None:
    """Write ticketlab's columns into Omniboard's settings collections (existing ones are left as they are)."""
    for name, path in CUSTOM_COLUMNS:
        database["omniboard.custom.columns"].update_one({"name": name}, {"$setOnInsert": {"config_path": path}},
                                                        upsert=True)
    for name, metric, extremum in METRIC_COLUMNS:
        database["omniboard.metric.columns"].update_one(
            {"name": name}, {"$setOnInsert": {"metric_name": metric, "extrema": extremum}}, upsert=True)


def ensure_tags(database) -> int:
    """Tag the runs that have no Omniboard tags (written before, or by another observer) as the observer would;
    returns how many."""
    untagged = list(database["runs"].find({"omniboard.tags": {"$exists": False}}, {"config": 1}))
    for run in untagged:
        database["runs"].update_one({"_id": run["_id"]},
                                    {"$set": {"omniboard.tags": ResilientMongoObserver.tags(run.get("config", {}))}})
    return len(untagged)


def omniboard_command() -> list[str]:
    start = ROOT / "node_modules" / "omniboard" / "dist" / "start.js"
    node = shutil.which("node")
    if not start.exists() or not node:
        raise FileNotFoundError(f"Omniboard is not installed: run `make setup` (needs node and npm; installs the "
                                f"version pinned in {ROOT / 'package.json'} into {ROOT / 'node_modules'})")
    return [node, str(start)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.omniboard", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("-m", "--mongo_db", metavar="HOST:PORT:DB", help="the run database, as for the experiments")
    where.add_argument("--mu", metavar="URI", help="a MongoDB URI with the database in its path")
    parser.add_argument("--port", type=int, default=9000, help="Omniboard's port (default 9000)")
    args = parser.parse_args(argv)
    if args.mu:
        uri, db_name = args.mu, urlparse(args.mu).path.lstrip("/") or "sacred"
        omniboard_args = ["--mu", args.mu]
    else:
        try:
            uri, db_name = parse_db_spec(args.mongo_db)
        except ValueError as error:
            parser.error(str(error))
        host_port = uri.split("://", 1)[1]
        omniboard_args = ["-m", f"{host_port}:{db_name}"]
    try:
        command = omniboard_command()
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            ensure_columns(client[db_name])
            ensure_tags(client[db_name])
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except pymongo.errors.PyMongoError as error:
        print(f"error: cannot reach the run database {db_name!r}: {error.__class__.__name__}", file=sys.stderr)
        return 2
    print(f"Omniboard for database {db_name!r}: http://127.0.0.1:{args.port}/sacred/  (Ctrl-C stops it)",
          flush=True)
    os.chdir(ROOT)  # become Omniboard (exec): a signal to this process reaches it, no child is left behind
    os.execve(command[0], command + omniboard_args, dict(os.environ, PORT=str(args.port)))


if __name__ == "__main__":
    sys.exit(main())
