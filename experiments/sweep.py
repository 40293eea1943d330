"""Run a grid of experiments, on this machine, a Dask cluster or Slurm, with the run database as the only truth.

    python -m experiments.sweep -m 127.0.0.1:27017:lottery --criteria large_final,random,large_init \\
        --mask1 original --mask0 zero --seeds 1,2,3 --workers 2 with reduced data.name=fashion_mnist
    python -m experiments.sweep -m HOST:27017:lottery --executor dask --scheduler tcp://HOST:8786 ... with ...
    python -m experiments.sweep -m HOST:27017:lottery --executor slurm --partition gpu --time 12:00:00 \\
        --mem 8G --gpus all --workers 40 ... with ...
    python -m experiments.sweep status -m HOST:27017:lottery          # the latest sweep, read from the database

The grid is the product of ``--criteria``, ``--mask1``, ``--mask0``, ``--seeds`` and any ``--grid KEY=V1,V2``;
everything after ``with`` applies to every run (config updates and named configs, as for the experiment).
Every point is configured, and so validated, before anything starts. Each point is one unit of work: wherever it
runs, it first claims its condition (``analysis.conditions.condition_hash`` of its config: everything but
execution keys) in the run database (``experiments.claims``), so a point that is COMPLETED or claimed by a live
holder is never started twice, by this sweep or any other on any host; a point whose holder died (no heartbeat
for ``--stale-after`` seconds) is taken over and its run resumed from its last finished round. Each run is
``python -m experiments.<experiment> with ... -m DB`` in its own process pinned to ``--threads`` threads (default
1: two single-thread processes beat one two-thread process). Executors (``--executor``):

- ``local`` (default): ``--workers`` runs at a time on this machine; ``--gpus 0,1 --runs-per-gpu 2`` gives each
  slot its own device (``training.device=cuda:N``), so four runs share two GPUs.
- ``dask``: each unit is a task on a Dask distributed cluster: ``--scheduler tcp://HOST:PORT`` (one started with
  ``dask scheduler`` and ``dask worker`` processes, each started in a ticketlab checkout or install with
  ``--nthreads 1``) or ``--scheduler local`` (a LocalCluster of ``--workers`` processes on 127.0.0.1). With
  ``--gpus``, a task needs the worker resource ``GPU`` (1 / ``--runs-per-gpu``): start one worker per GPU with
  ``CUDA_VISIBLE_DEVICES=N dask worker ... --resources GPU=1``; its runs use ``training.device=cuda``.
  ``--scheduler local --gpus 0,1`` starts those workers itself, one per GPU.
- ``slurm``: sbatch job arrays (``--workers`` array tasks at a time) with ``--partition``, ``--time``, ``--mem``,
  ``--threads`` CPUs per task and one GPU per task with ``--gpus``; logs in ``--logs`` (slurm-JOB_TASK.out).

The sweep shows the rounds done across all its runs with an ETA and which runs are running, retries a failed or
lost unit up to ``--retries`` times (it resumes), waits for points another sweep holds, and exits non-zero if
any point failed. ``--detach`` leaves the work running (local: a background sweep process; dask: the tasks stay
on the cluster; slurm: the jobs stay queued); ``python -m experiments.sweep status -m DB`` reports it later.
Runs kept on disk while the database was down are uploaded first. Per-run logs go to ``--logs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import itertools
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pymongo
import pymongo.errors
from sacred.arg_parser import get_config_updates
from sacred.initialize import create_run
from tqdm import tqdm

from ticketlab.identity import point_hash, science_version, version_of
from experiments import claims
from experiments import dbspec
from experiments.executors import FAILED, HELD, LOST, Unit
from experiments.localdb import home_dir
from experiments.observers import SERVER_TIMEOUT_MS, upload_failed_runs
from experiments.progress import clock
from ticketlab.cli import Parser

EXPERIMENTS = ("lottery", "supermask")
EXECUTORS = ("local", "dask", "slurm")
SWEEPS = "sweeps"  # one document per sweep: its points, for ``status``


def grid_points(axes: dict[str, list[str]]) -> list[list[str]]:
    """``KEY=VALUE`` update lists, one per point of the product of ``axes`` (in the order given)."""
    keys = list(axes)
    return [[f"{k}={v}" for k, v in zip(keys, values)] for values in itertools.product(*(axes[k] for k in keys))]


def resolve(experiment, updates: list[str]) -> dict:
    """The full config a run with these ``with`` arguments gets (config hooks run: values are validated)."""
    config_updates, named_configs = get_config_updates(updates)
    return create_run(experiment, experiment.default_command, config_updates, named_configs=named_configs).config


def completed_hashes(url: str, db_name: str, experiment_name: str) -> dict[str, set[str]]:
    """{point: the science versions of its COMPLETED runs} (``ticketlab.identity``)."""
    client = dbspec.connect(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    try:
        cursor = client[db_name]["runs"].find({"status": "COMPLETED", "experiment.name": experiment_name},
                                              {"config": 1, "info.science": 1})
        done: dict[str, set[str]] = {}
        for doc in cursor:
            done.setdefault(point_hash(doc["config"]), set()).add(version_of(doc))
        return done
    finally:
        client.close()


def points_to_run(hashes: list[str], done: dict[str, set[str]], keep_other_versions: bool) -> tuple[list[int], str]:
    """The grid indices to run, and the one line (or "") that says which points other science versions finished:
    by default those are run again with this code's version; ``keep_other_versions`` counts them done."""
    current = science_version()
    todo = [i for i, h in enumerate(hashes) if current not in done.get(h, set())
            and not (keep_other_versions and done.get(h))]
    others = Counter(v for h in hashes if current not in done.get(h, set()) for v in done.get(h, set()))
    if not others:
        return todo, ""
    points = sum(1 for h in hashes if done.get(h) and current not in done[h])
    versions = ", ".join(f"{v}: {n} run(s)" for v, n in sorted(others.items()))
    what = "counted as done (--keep-other-versions)" if keep_other_versions else \
        f"run again with this code's science version {current} (--keep-other-versions counts them done)"
    return todo, f"sweep: {points} point(s) were completed only by other science versions ({versions}): {what}"


def work_of(experiment: str, config: dict) -> tuple[int, int | None]:
    """Units of progress of one run: (its rounds, training steps per round) for a lottery run, else (1, None)."""
    if experiment == "lottery":
        return config["pruning"]["rounds"] + 1, config["training"]["iterations"]
    return 1, None


def _last_steps(db, run_ids: list) -> dict:
    """The last logged training step of each run (one number per run: ``$slice``, not the whole series)."""
    if not run_ids:
        return {}
    cursor = db["metrics"].find({"run_id": {"$in": run_ids}, "name": "train_loss"},
                                {"run_id": 1, "steps": {"$slice": -1}})
    return {doc["run_id"]: doc["steps"][-1] for doc in cursor if doc.get("steps")}


def point_states(db, experiment: str, points: list[dict], stale_after: float) -> list[dict]:
    """Where each point stands, from the runs, metrics and claims in the database: state (completed, running,
    failed, dead, waiting), rounds done (with the running round's fraction of its steps) and the run holding it."""
    conditions = [p["condition"] for p in points]
    runs: dict[str, list[dict]] = {}
    query = {"$or": [{"info.point": {"$in": conditions}}, {"info.condition_hash": {"$in": conditions}}]}
    for run in db["runs"].find({"experiment.name": experiment, **query},
                               {"status": 1, "heartbeat": 1, "info.rounds": 1, "info.point": 1,
                                "info.condition_hash": 1, "info.science": 1}):
        runs.setdefault(run["info"].get("point") or run["info"]["condition_hash"], []).append(run)
    held = claims.get(db, conditions)
    states = []
    for point in points:
        # runs of another science version than the sweep's (when it asks for one) are not this point's progress
        its_runs = [r for r in runs.get(point["condition"], []) if point.get("science") in (None, version_of(r))]
        claim = held.get(point["condition"])
        done = [r for r in its_runs if r.get("status") == "COMPLETED"]
        best = max(its_runs, key=lambda r: (len(r["info"].get("rounds") or []), r["_id"]), default=None)
        rounds = point["work"] if done else min(len((best or {"info": {}})["info"].get("rounds") or []),
                                                point["work"])
        if done:
            state, run_id = "completed", done[0]["_id"]
        elif claim and claim["state"] == claims.RUNNING:
            state = "dead" if claims.is_claimable(claim, stale_after) else "running"
            live = [r for r in its_runs if r.get("status") == "RUNNING"]
            run_id = max(live, key=lambda r: r["_id"])["_id"] if live else None
        elif claim and claim["state"] == claims.FAILED:
            state, run_id = "failed", best["_id"] if best else None
        else:
            state, run_id = "waiting", None
        states.append({**point, "state": state, "rounds": rounds, "run_id": run_id,
                       "host": (claim or {}).get("host")})
    running = [s for s in states if s["state"] == "running" and s["run_id"] is not None and s.get("steps")]
    last = _last_steps(db, [s["run_id"] for s in running])
    for s in running:  # the round in training: the fraction of its steps logged so far
        if s["run_id"] in last and s["rounds"] < s["work"]:
            s["rounds"] += min(max(last[s["run_id"]] - s["rounds"] * s["steps"], 0) / s["steps"], 0.99)
    return states


def describe_running(states: list[dict], limit: int = 4) -> str:
    running = [s for s in states if s["state"] == "running"]
    parts = [f"run {s['run_id'] if s['run_id'] is not None else '?'} "
             f"({' '.join(v.partition('=')[2] for v in s['label'].split())}) {s['rounds']:.1f}/{s['work']}"
             for s in running[:limit]]
    return ", ".join(parts) + (f" +{len(running) - limit}" if len(running) > limit else "")


class Progress:
    """The sweep's bar: rounds done across all points (read from the database) with an ETA, and what runs. On a
    terminal a bar redrawn in place; elsewhere (a log file, a pipe) one plain line every ``LINE_EVERY`` seconds."""

    LINE_EVERY = 60.0

    def __init__(self, db, experiment: str, points: list[dict], stale_after: float):
        self.db, self.experiment, self.points, self.stale_after = db, experiment, points, stale_after
        self.states = self._read() or []
        done = sum(s["rounds"] for s in self.states)
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=sum(p["work"] for p in points), initial=done, unit="round", desc=experiment,
                        dynamic_ncols=True, disable=not self.tty,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} rounds [{elapsed}<{remaining}, {rate_fmt}{postfix}]")
        self.total, self.first, self.started = sum(p["work"] for p in points), done, time.monotonic()
        self.last = self.last_line = time.monotonic()
        self.failed = 0

    def _read(self):
        try:
            return point_states(self.db, self.experiment, self.points, self.stale_after)
        except pymongo.errors.PyMongoError:
            return None  # the database is down for a moment: the bar waits

    def refresh(self, failed: int, every: float = 2.0, final: bool = False) -> None:
        self.failed = failed
        if time.monotonic() - self.last < every and not final:
            return
        self.last = time.monotonic()
        states = self._read()
        if states is None:
            return
        self.states = states
        done = sum(s["rounds"] for s in states)
        if not self.tty:
            if time.monotonic() - self.last_line >= self.LINE_EVERY or final:
                self.last_line = time.monotonic()
                print(self.line(done, failed), file=sys.stderr, flush=True)
            return
        self.bar.update(done - self.bar.n)
        postfix = {"running": describe_running(states) or "-"}
        if failed:
            postfix["failed"] = failed
        self.bar.set_postfix(postfix, refresh=True)

    def line(self, done: float, failed: int) -> str:
        """The plain status line: rounds done, runs completed, what runs, elapsed time and ETA."""
        elapsed = time.monotonic() - self.started
        rate = (done - self.first) / elapsed if elapsed > 0 else 0
        eta = clock((self.total - done) / rate) if rate > 0 else "?"
        completed = sum(s["state"] == "completed" for s in self.states)
        return (f"sweep: {done:.1f}/{self.total} rounds, {completed}/{len(self.points)} runs completed"
                + (f", {failed} failed" if failed else "") + f"; running: {describe_running(self.states) or '-'}; "
                f"elapsed {clock(elapsed)}, ETA {eta}")

    def close(self) -> None:
        """The last state: the bar drawn once more, or on a file one last line."""
        self.refresh(self.failed, final=True)
        self.bar.close()


def print_decisions(db, undecided: dict[str, Unit]) -> None:
    """One line for each unit that found its point unfinished, as soon as it decided (``claims.takeover``: kept in
    its claim, wherever the unit runs): ``sweep: <point>: resumed run N after round k`` or ``... started anew: why``.
    A unit whose decision is printed leaves ``undecided``."""
    try:
        current = claims.get(db, {unit.condition for unit in undecided.values()})
    except pymongo.errors.PyMongoError:
        return  # the database is down for a moment: printed at the next look
    for token, unit in list(undecided.items()):
        claim = current.get(unit.condition) or {}
        if claim.get("decision") and claim.get("token", "").split("@")[0] == token:
            tqdm.write(f"sweep: {unit.label()}: {claim['decision']}")
            del undecided[token]


def drive(executor, units: list[Unit], db, sweep_id: str, retries: int, stale_after: float,
          progress: Progress) -> dict[int, tuple[Unit, str]]:
    """Run the units to the end: retry failed or lost ones (they resume), wait for points other holders have
    and take them over when those die. Returns the units that failed for good, with their last outcome."""
    submissions, tries = Counter(), Counter()
    held: dict[int, Unit] = {}
    failed: dict[int, tuple[Unit, str]] = {}
    undecided: dict[str, Unit] = {}  # submitted units whose decision about their point is not printed yet

    def submit(batch: list[Unit]) -> None:
        for unit in batch:
            submissions[unit.index] += 1
        batch = [dataclasses.replace(u, token=f"{sweep_id}/{u.index}/{submissions[u.index]}") for u in batch]
        undecided.update((u.token, u) for u in batch)
        executor.submit(batch)

    submit(units)
    last_check = last_look = 0.0
    while executor.running() or held:
        again = []
        finished = executor.finished(timeout=1.0)
        if undecided and (finished or time.monotonic() - last_look > 2.0):
            last_look = time.monotonic()
            print_decisions(db, undecided)
        for unit, outcome in finished:
            undecided.pop(unit.token, None)
            if outcome == HELD:
                held[unit.index] = unit
            elif outcome in (FAILED, LOST):
                tries[unit.index] += 1
                if tries[unit.index] <= retries:
                    tqdm.write(f"sweep: {unit.label()} {outcome}; retry {tries[unit.index]} of {retries} "
                               f"(it resumes from its last finished round)", file=sys.stderr)
                    again.append(unit)
                else:
                    failed[unit.index] = (unit, outcome)
        if held and time.monotonic() - last_check > 2.0:
            last_check = time.monotonic()
            try:
                current = claims.get(db, [u.condition for u in held.values()])
                for index, unit in list(held.items()):
                    if claims.completed_run(db, unit.experiment, unit.condition, unit.science) is not None:
                        del held[index]
                    elif claims.is_claimable(current.get(unit.condition), stale_after):
                        del held[index]  # its holder died or gave up: take it over
                        again.append(unit)
            except pymongo.errors.PyMongoError:
                pass
        submit(again)
        progress.refresh(len(failed))
    return failed


def parse_args(argv):
    parser = Parser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
                                     epilog="Anything after 'with' is passed to every run. "
                                            "'python -m experiments.sweep status -m DB' reports a sweep.")
    dbspec.add_argument(parser)
    parser.add_argument("--experiment", choices=EXPERIMENTS, default="lottery")
    parser.add_argument("--criteria", help="comma-separated criterion.name values")
    parser.add_argument("--mask1", help="comma-separated treatment.mask1 values")
    parser.add_argument("--mask0", help="comma-separated treatment.mask0 values")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (default 1)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="another grid axis over any config key (repeatable)")
    parser.add_argument("--executor", choices=EXECUTORS, default="local", help="where runs execute (default local)")
    parser.add_argument("--workers", type=int, default=2,
                        help="runs at a time (local; dask --scheduler local; slurm: array tasks at a time)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and Slurm CPUs) per run (default 1)")
    parser.add_argument("--gpus", default=None, metavar="0,1|all",
                        help="local: which GPUs, each run on its own (training.device=cuda:N); dask/slurm: runs "
                             "need a GPU (worker resource GPU / one GPU per Slurm task)")
    parser.add_argument("--runs-per-gpu", type=int, default=1, help="runs sharing one GPU (default 1)")
    parser.add_argument("--stale-after", type=float, default=claims.DEFAULT_STALE_AFTER, metavar="SECONDS",
                        help="a claim or RUNNING run without a heartbeat this long is dead: taken over and "
                             f"resumed (default {claims.DEFAULT_STALE_AFTER:.0f})")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed or lost unit (default 2)")
    parser.add_argument("--keep-other-versions", action="store_true",
                        help="count a point done when a COMPLETED run of it was made by another science version "
                             "(masking/ changed since); by default such points are run again")
    parser.add_argument("--detach", action="store_true", help="start the work, leave it running, and return")
    parser.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT|local", help="dask: the scheduler")
    parser.add_argument("--partition", default=None, help="slurm: the partition")
    parser.add_argument("--time", default=None, dest="time_limit", help="slurm: time limit per run, e.g. 12:00:00")
    parser.add_argument("--mem", default=None, help="slurm: memory per run, e.g. 8G")
    parser.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="slurm: another sbatch option, e.g. --sbatch=--account=lab (repeatable)")
    parser.add_argument("--logs", type=Path, default=None, help="folder for per-run logs")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--population", type=population_size, default=1, metavar="K|auto",
                        help="train up to K points that differ only in seed, criterion and treatment (supermask: "
                             "seed and settings) as one population in one process (experiments.population), "
                             "on this machine; with --gpus each population trains on one GPU slot; auto: K from "
                             "the GPU's memory and measured step time (experiments.population_size; 1 on a CPU)")
    parser.add_argument("--failure-dir", default=None, help="where runs kept during a database outage wait")
    parser.add_argument("--sweep-id", default=None, help=argparse.SUPPRESS)  # a detached local sweep's own id
    argv = list(argv)
    shared = argv[argv.index("with") + 1:] if "with" in argv else []
    args = parser.parse_args(argv[:argv.index("with")] if "with" in argv else argv)
    args.shared = shared
    return args, parser


def population_size(text: str) -> int | str:
    """A ``--population`` value: a number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or auto") from None


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


def check_execution(args, parser) -> list[str] | None:
    """Executor flags checked before anything starts (one line naming the bad value); local GPU devices."""
    if args.workers < 1 or args.threads < 1 or args.runs_per_gpu < 1 or args.retries < 0:
        parser.error("--workers, --threads and --runs-per-gpu must be at least 1, --retries at least 0")
    if args.stale_after <= claims.SACRED_BEAT:
        parser.error(f"--stale-after {args.stale_after:g} must exceed Sacred's heartbeat of "
                     f"{claims.SACRED_BEAT:g} s")
    if args.population != "auto" and args.population < 1:
        parser.error(f"--population {args.population} must be at least 1")
    if (args.population == "auto" or args.population > 1) and (args.executor != "local" or args.detach):
        parser.error("--population runs on this machine: it takes --executor local (with --gpus or without), "
                     "not --detach")
    if args.executor == "dask":
        if not args.scheduler:
            parser.error("--executor dask needs --scheduler tcp://HOST:PORT (or --scheduler local)")
        if args.scheduler != "local" and "://" not in args.scheduler:
            parser.error(f"--scheduler {args.scheduler!r} is not tcp://HOST:PORT or local")
        if args.detach and args.scheduler == "local":
            parser.error("--detach needs a scheduler that outlives this command (--scheduler tcp://HOST:PORT)")
    elif args.scheduler:
        parser.error(f"--scheduler applies to --executor dask, not {args.executor}")
    if args.executor == "slurm" and not shutil.which("sbatch"):
        parser.error("--executor slurm: sbatch is not on PATH (run the sweep on a Slurm login node)")
    if args.executor != "slurm" and (args.partition or args.time_limit or args.mem or args.sbatch):
        parser.error(f"--partition, --time, --mem and --sbatch apply to --executor slurm, not {args.executor}")
    args.gpu_ids = None  # this machine's GPUs that the runs use (local executor; a local Dask cluster)
    if args.gpus is None or not (args.executor == "local" or args.scheduler == "local"):
        return None
    import torch

    try:
        args.gpu_ids = gpu_ids(args.gpus, torch.cuda.device_count())
    except ValueError as error:
        parser.error(str(error))
    if args.executor != "local":
        return None
    return [f"cuda:{i}" for i in args.gpu_ids for _ in range(args.runs_per_gpu)]


def gpu_ids(spec: str, count: int) -> list[int]:
    """The GPU ids ``--gpus`` names (``0,1`` or ``all``) on a machine with ``count`` GPUs; a ValueError in one line
    naming the valid choices otherwise."""
    valid = f"valid: 0..{count - 1} or all" if count else "no CUDA device on this machine"
    try:
        ids = list(range(count)) if spec == "all" else [int(i) for i in spec.split(",")]
    except ValueError:
        ids = None
    if not ids or any(not 0 <= i < count for i in ids):
        raise ValueError(f"--gpus {spec!r} names no usable GPU ({valid})")
    return ids


def make_executor(args, db, logs: Path, devices: list[str] | None, population_key=None):
    """The executor ``args`` name; with ``population_key`` (a unit's population group), local populations."""
    from experiments import executors

    if population_key is not None:
        return executors.PopulationExecutor(len(devices) if devices else args.workers, args.population,
                                            population_key, list(args.shared), args.threads, logs, devices)
    if args.executor == "local":
        return executors.LocalExecutor(len(devices) if devices else args.workers, devices)
    if args.executor == "dask":
        return executors.DaskExecutor(args.scheduler, args.workers, 1 / args.runs_per_gpu if args.gpus else None,
                                      [str(i) for i in args.gpu_ids] if args.gpu_ids else None)
    return executors.SlurmExecutor(db, logs, args.threads, args.workers, args.partition, args.time_limit, args.mem,
                                   1 if args.gpus else 0, args.sbatch)


def detach_local(argv: list[str], sweep_id: str, logs: Path) -> int:
    """The same sweep as a background process in its own session, outliving this command."""
    command = [sys.executable, "-m", "experiments.sweep", "--sweep-id", sweep_id,
               *[a for a in argv if a != "--detach"]]
    out = open(logs / "sweep.out", "ab")
    process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    return process.pid


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        return status(argv[1:])
    args, parser = parse_args(argv)
    devices = check_execution(args, parser)
    url, db_name = _database(args, parser)
    experiment = importlib.import_module(f"experiments.{args.experiment}").ex
    axes = build_axes(args, parser)
    labels = [" ".join(point) for point in grid_points(axes)]
    points = [args.shared + point for point in grid_points(axes)]
    try:
        configs = [resolve(experiment, point) for point in points]
    except Exception as error:  # a bad value anywhere in the grid: nothing has started
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.population == "auto":  # measured on this machine's GPU (experiments.population_size)
        from experiments import population_size

        args.population = population_size.choose(configs[0], len(configs), devices, args.workers, args.experiment)
    client = dbspec.connect(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    try:
        db = client[db_name]
        try:
            if not args.sweep_id:
                for bundle, run_id in upload_failed_runs(url, db_name, args.failure_dir):
                    print(f"uploaded run {run_id} kept during a database outage ({bundle})")
            done = completed_hashes(url, db_name, experiment.path)
        except pymongo.errors.PyMongoError as error:
            print(f"error: {dbspec.unreachable(dbspec.DbSpec(url, db_name), error)}", file=sys.stderr)
            return 2
        return run_grid(args, argv, db, experiment.path, labels, points, configs, done, devices)
    finally:
        client.close()


def run_grid(args, argv, db, experiment: str, labels, points, configs, done: dict[str, set[str]], devices) -> int:
    """Run the grid's points that are not done (``done``: ``completed_hashes``) with the executor ``args`` name,
    or, with ``--population K``, in populations (``executors.PopulationExecutor``): every unit claims its point."""
    hashes = [point_hash(c) for c in configs]
    todo, versions = points_to_run(hashes, done, args.keep_other_versions)
    if versions:
        print(versions)
    science = None if args.keep_other_versions else science_version()
    workers = len(devices) if devices else args.workers
    where = {"local": f"{workers} workers x {args.threads} thread(s)"
                      + (f" on {', '.join(sorted(set(devices)))}" if devices else ""),
             "dask": f"Dask scheduler {args.scheduler}", "slurm": "Slurm job arrays"}[args.executor]
    keys = None
    if args.population > 1:  # compatible points trained together (experiments.population)
        from experiments import population

        keys = {i: population.group_key(configs[i], args.experiment) for i in todo}
        groups = population.group([configs[i] for i in todo], args.population, args.experiment)
        alone = sum(len(members) == 1 for members in groups)
        where = (f"as {len(groups) - alone} population(s) of at most {args.population} and {alone} single run(s), "
                 f"{workers} at a time x {args.threads} thread(s)"
                 + (f" on {', '.join(sorted(set(devices)))}" if devices else ""))
    print(f"sweep: {len(points)} runs in the grid, {len(points) - len(todo)} already completed, {len(todo)} to run "
          f"{where if keys is not None else 'with ' + where}")
    if keys is not None and len(groups) > alone and not torch_cuda_available():
        print(f"sweep: {population.CPU_NOTE}")
    if not todo:
        print("sweep: nothing to run")
        return 0
    if args.dry_run:
        for i in todo:
            print("  with " + " ".join(points[i]))
        return 0
    sweep_id = args.sweep_id or datetime.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    logs = (args.logs or home_dir() / "sweep_logs" / sweep_id).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    records = [{"index": i, "label": labels[i], "updates": points[i], "condition": hashes[i], "science": science,
                **dict(zip(("work", "steps"), work_of(args.experiment, configs[i])))} for i in range(len(points))]
    db[SWEEPS].replace_one({"_id": sweep_id}, {
        "_id": sweep_id, "experiment": experiment, "executor": args.executor, "created": claims.utcnow(),
        "host": os.uname().nodename, "logs": str(logs), "detached": args.detach, "points": records,
        "stale_after": args.stale_after, "command": ["python", "-m", "experiments.sweep", *argv]}, upsert=True)
    if args.detach and args.executor == "local":
        pid = detach_local(argv, sweep_id, logs)
        print(f"sweep {sweep_id}: running in the background (pid {pid}; output in {logs / 'sweep.out'}); "
              f"see it with: python -m experiments.sweep status -m {args.mongo_db} --sweep {sweep_id}")
        return 0
    units = [Unit(index=i, experiment=args.experiment, updates=points[i], condition=hashes[i],
                  db_spec=args.mongo_db, threads=args.threads, device="cuda" if args.gpus and not devices else None,
                  stale_after=args.stale_after, log=str(logs / f"run_{i:04d}.log"), science=science) for i in todo]
    try:
        executor = make_executor(args, db, logs, devices, None if keys is None else (lambda unit: keys[unit.index]))
    except (OSError, RuntimeError) as error:
        print(f"error: the {args.executor} executor did not start: {error}", file=sys.stderr)
        return 2
    try:
        if args.detach:
            executor.submit([dataclasses.replace(u, token=f"{sweep_id}/{u.index}/1") for u in units])
            executor.detach()
            print(f"sweep {sweep_id}: {len(units)} units left running on {args.executor}; see them with: "
                  f"python -m experiments.sweep status -m {args.mongo_db} --sweep {sweep_id}")
            return 0
        progress = Progress(db, experiment, [records[i] for i in todo], args.stale_after)
        try:
            failed = drive(executor, units, db, sweep_id, args.retries, args.stale_after, progress)
        finally:
            progress.close()
    except RuntimeError as error:  # sbatch refused the jobs (partition, time or memory the cluster cannot give)
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        executor.close()
    print(f"sweep: {len(todo) - len(failed)} of {len(todo)} runs completed; logs in {logs}")
    for unit, outcome in failed.values():
        print(f"  FAILED ({outcome}): with {' '.join(unit.updates)}  (log: {unit.log})", file=sys.stderr)
    return 1 if failed else 0


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _database(args, parser) -> tuple[str, str]:
    """(URL, database name) of the command's ``-m`` (or $TICKETLAB_MONGO_URI); a bad spec ends the command in one
    line. Runs are given the spec as typed (``-m``): their own Sacred options are scrubbed of the password."""
    try:
        spec = dbspec.parse(args.mongo_db)
    except ValueError as error:
        parser.error(dbspec.scrub(error))
    args.mongo_db = args.mongo_db or os.environ[dbspec.URI_VARIABLE]
    return spec.url, spec.db_name


def status(argv) -> int:
    """``python -m experiments.sweep status -m DB [--sweep ID]``: a sweep's points as the database has them."""
    parser = Parser(prog="python -m experiments.sweep status",
                                     description="Report a sweep (default: the latest) from the run database.")
    dbspec.add_argument(parser)
    parser.add_argument("--sweep", default=None, help="the sweep id (printed when it started)")
    args = parser.parse_args(argv)
    url, db_name = _database(args, parser)
    with dbspec.connect(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS) as client:
        db = client[db_name]
        try:
            if args.sweep:
                sweep = db[SWEEPS].find_one({"_id": args.sweep})
            else:
                sweep = next(iter(db[SWEEPS].find().sort("created", pymongo.DESCENDING).limit(1)), None)
            if sweep is None:
                print(f"no sweep {args.sweep or ''} in {dbspec.scrub(args.mongo_db)}".replace("  ", " "),
                      file=sys.stderr)
                return 2
            states = point_states(db, sweep["experiment"], sweep["points"], sweep.get("stale_after",
                                                                                    claims.DEFAULT_STALE_AFTER))
        except pymongo.errors.PyMongoError as error:
            print(f"error: {dbspec.unreachable(dbspec.DbSpec(url, db_name), error)}", file=sys.stderr)
            return 2
    counts = Counter(s["state"] for s in states)
    rounds, total = sum(s["rounds"] for s in states), sum(s["work"] for s in states)
    print(f"sweep {sweep['_id']} ({sweep['experiment']}, {sweep['executor']}, started "
          f"{sweep['created']:%Y-%m-%d %H:%M} UTC on {sweep['host']}): {len(states)} points: "
          + ", ".join(f"{counts[k]} {k}" for k in ("completed", "running", "failed", "dead", "waiting") if counts[k])
          + f"; {_num(rounds)} of {total} rounds done")
    for s in states:
        if s["state"] != "completed":
            run = f"run {s['run_id']}" if s["run_id"] is not None else "no run"
            host = f" on {s['host']}" if s["host"] and s["state"] == "running" else ""
            print(f"  {s['state']:8s} {s['label']}: {run}{host}, {_num(s['rounds'])} of {s['work']} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
