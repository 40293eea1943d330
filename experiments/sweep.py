"""Run a grid of experiments in parallel worker processes, skipping runs already COMPLETED in the database.

    python -m experiments.sweep -m 127.0.0.1:27017:lottery --criteria large_final,random,large_init \\
        --mask1 original --mask0 zero --seeds 1,2,3 --workers 2 with reduced data.name=fashion_mnist

The grid is the product of ``--criteria``, ``--mask1``, ``--mask0``, ``--seeds`` and any ``--grid KEY=V1,V2``;
everything after ``with`` applies to every run (config updates and named configs, as for the experiment).
Each run is ``python -m experiments.<experiment> with ... -m DB`` in its own process, pinned to
``--threads`` threads (default 1: two single-thread processes beat one two-thread process). Every point is
configured, and so validated, before anything starts; a point whose config hash
(``analysis.conditions.condition_hash``: the whole config but data root and threads) matches a COMPLETED run in
the database is skipped, so an interrupted sweep resumes where it stopped. Runs kept on disk while the database
was down are uploaded first. Worker output goes to ``--logs`` (one file per run); a progress bar shows the sweep.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import importlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pymongo
import pymongo.errors
from sacred.arg_parser import get_config_updates
from sacred.initialize import create_run
from tqdm import tqdm

from analysis.conditions import condition_hash
from experiments.dbspec import parse_db_spec
from experiments.localdb import home_dir
from experiments.observers import SERVER_TIMEOUT_MS, upload_failed_runs

EXPERIMENTS = ("lottery", "supermask")


def grid_points(axes: dict[str, list[str]]) -> list[list[str]]:
    """``KEY=VALUE`` update lists, one per point of the product of ``axes`` (in the order given)."""
    keys = list(axes)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(axes[k] for k in keys))]


def resolve(experiment, updates: list[str]) -> dict:
    """The full config a run with these ``with`` arguments gets (config hooks run: values are validated)."""
    config_updates, named_configs = get_config_updates(updates)
    return create_run(experiment, experiment.default_command, config_updates, named_configs=named_configs).config


def completed_hashes(url: str, db_name: str, experiment_name: str) -> set[str]:
    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    try:
        cursor = client[db_name]["runs"].find({"status": "COMPLETED", "experiment.name": experiment_name},
                                              {"config": 1})
        return {condition_hash(doc["config"]) for doc in cursor}
    finally:
        client.close()


def run_one(experiment: str, updates: list[str], db_spec: str, threads: int, log_path: Path) -> int:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", f"experiments.{experiment}", "with", *updates, f"training.threads={threads}",
               "-m", db_spec]
    with open(log_path, "w") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL).returncode


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Anything after 'with' is passed to every run.")
    parser.add_argument("-m", "--mongo_db", required=True, metavar="HOST:PORT:DB", help="the run database")
    parser.add_argument("--experiment", choices=EXPERIMENTS, default="lottery")
    parser.add_argument("--criteria", help="comma-separated criterion.name values")
    parser.add_argument("--mask1", help="comma-separated treatment.mask1 values")
    parser.add_argument("--mask0", help="comma-separated treatment.mask0 values")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="another grid axis over any config key (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="runs at a time (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--logs", type=Path, default=None, help="folder for per-run logs")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--failure-dir", default=None, help="where runs kept during a database outage wait")
    argv = list(argv)
    shared = argv[argv.index("with") + 1:] if "with" in argv else []
    args = parser.parse_args(argv[:argv.index("with")] if "with" in argv else argv)
    args.shared = shared
    return args, parser


def build_axes(args, parser) -> dict[str, list[str]]:
    axes = {}
    for flag, key in (("criteria", "criterion.name"), ("mask1", "treatment.mask1"), ("mask0", "treatment.mask0")):
        if getattr(args, flag):
            if args.experiment != "lottery":
                parser.error(f"--{flag} applies to the lottery experiment only")
            axes[key] = getattr(args, flag).split(",")
    for item in args.grid:
        key, _, values = item.partition("=")
        if not key or not values:
            parser.error(f"--grid {item!r} is not KEY=V1,V2")
        axes[key] = values.split(",")
    axes["seed"] = args.seeds.split(",")
    return axes


def main(argv=None) -> int:
    args, parser = parse_args(sys.argv[1:] if argv is None else argv)
    if args.workers < 1 or args.threads < 1:
        parser.error("--workers and --threads must be at least 1")
    try:
        url, db_name = parse_db_spec(args.mongo_db)
    except ValueError as error:
        parser.error(str(error))
    experiment = importlib.import_module(f"experiments.{args.experiment}").ex
    points = [args.shared + point for point in grid_points(build_axes(args, parser))]
    try:
        configs = [resolve(experiment, point) for point in points]
    except Exception as error:  # a bad value anywhere in the grid: nothing has started
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        for bundle, run_id in upload_failed_runs(url, db_name, args.failure_dir):
            print(f"uploaded run {run_id} kept during a database outage ({bundle})")
        done = completed_hashes(url, db_name, experiment.path)
    except pymongo.errors.PyMongoError as error:
        print(f"error: the run database {url}/{db_name} is unreachable: {error.__class__.__name__}", file=sys.stderr)
        return 2
    todo = [p for p, c in zip(points, configs) if condition_hash(c) not in done]
    print(f"sweep: {len(points)} runs in the grid, {len(points) - len(todo)} already completed, {len(todo)} to run "
          f"with {args.workers} workers x {args.threads} thread(s)")
    if args.dry_run:
        for point in todo:
            print("  with " + " ".join(point))
        return 0
    logs = args.logs or home_dir() / "sweep_logs" / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    failed = []
    with concurrent.futures.ThreadPoolExecutor(args.workers) as pool, \
            tqdm(total=len(todo), unit="run", desc=args.experiment, dynamic_ncols=True) as bar:
        futures = {pool.submit(run_one, args.experiment, point, args.mongo_db, args.threads,
                               logs / f"run_{i:04d}.log"): (i, point) for i, point in enumerate(todo)}
        for future in concurrent.futures.as_completed(futures):
            i, point = futures[future]
            if future.result() != 0:
                failed.append((i, point))
                bar.set_postfix(failed=len(failed))
            bar.update()
    print(f"sweep: {len(todo) - len(failed)} of {len(todo)} runs completed; logs in {logs}")
    for i, point in failed:
        print(f"  FAILED: with {' '.join(point)}  (log: {logs / f'run_{i:04d}.log'})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
