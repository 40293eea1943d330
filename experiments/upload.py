"""Upload runs that finished while the run database was unreachable (kept on disk by the observer).

    python -m experiments.upload -m 127.0.0.1:27017:lottery [--failure-dir ~/.ticketlab/failed_runs]
    ticketlab upload -m "mongodb://USER:PASSWORD@HOST:27017/lottery?authSource=admin"

The database: ``-m HOST:PORT:DB``, ``-m mongodb://...``/DB, or ``$TICKETLAB_MONGO_URI`` when no ``-m`` is given.
"""

from __future__ import annotations

import sys

import pymongo.errors

from experiments.observers import default_failure_dir, failed_run_bundles, upload_failed_runs
from ticketlab import dbspec
from ticketlab.cli import Parser, add_database


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.upload", description=__doc__.split("\n\n")[0])
    add_database(parser)
    parser.add_argument("--failure-dir", default=None,
                        help=f"where the observer kept the runs (default: $TICKETLAB_FAILURE_DIR or "
                             f"{default_failure_dir()})")
    args = parser.parse_args(argv)
    spec = parser.database(args)
    pending = failed_run_bundles(args.failure_dir)
    if not pending:
        print(f"no runs waiting in {args.failure_dir or default_failure_dir()}")
        return 0
    unreadable: list[str] = []
    try:
        done = upload_failed_runs(spec.url, spec.db_name, args.failure_dir, unreadable)
    except pymongo.errors.PyMongoError as error:
        print(f"error: {dbspec.unreachable(spec, error)}", file=sys.stderr)
        return 2
    for bundle, run_id in done:
        print(f"uploaded run {run_id} to {spec.db_name} (bundle moved to {bundle})")
    for reason in unreadable:
        print(f"error: {reason}", file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
