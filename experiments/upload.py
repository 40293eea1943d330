"""Upload runs that finished while the run database was unreachable (kept on disk by the observer).

    python -m experiments.upload -m 127.0.0.1:27017:lottery [--failure-dir ~/.ticketlab/failed_runs]
"""

from __future__ import annotations

import argparse
import sys

import pymongo.errors

from experiments.dbspec import parse_db_spec
from experiments.observers import default_failure_dir, failed_run_bundles, upload_failed_runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.upload", description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--mongo_db", required=True, metavar="HOST:PORT:DB",
                        help="the run database, as for the experiments' -m option")
    parser.add_argument("--failure-dir", default=None,
                        help=f"where the observer kept the runs (default: $TICKETLAB_FAILURE_DIR or "
                             f"{default_failure_dir()})")
    args = parser.parse_args(argv)
    try:
        url, db_name = parse_db_spec(args.mongo_db)
    except ValueError as error:
        parser.error(str(error))
    pending = failed_run_bundles(args.failure_dir)
    if not pending:
        print(f"no runs waiting in {args.failure_dir or default_failure_dir()}")
        return 0
    unreadable: list[str] = []
    try:
        done = upload_failed_runs(url, db_name, args.failure_dir, unreadable)
    except pymongo.errors.PyMongoError as error:
        where = url.rsplit("@", 1)[-1]  # no credentials in a printed line
        print(f"error: cannot upload to {where} database {db_name!r}: {error.__class__.__name__}", file=sys.stderr)
        return 2
    for bundle, run_id in done:
        print(f"uploaded run {run_id} to {db_name} (bundle moved to {bundle})")
    for reason in unreadable:
        print(f"error: {reason}", file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
