"""Run a grid of experiments, on this machine, a Dask cluster or Slurm, with the run database as the only truth.

    python -m experiments.sweep -m 127.0.0.1:27017:lottery --criteria large_final,random,large_init \\
        --mask1 original --mask0 zero --seeds 1,2,3 --workers 2 with reduced data.name=fashion_mnist
    python -m experiments.sweep -m HOST:27017:lottery --executor dask --scheduler tcp://HOST:8786 ... with ...
    python -m experiments.sweep -m HOST:27017:lottery --executor slurm --partition gpu --time 12:00:00 \\
        --mem 8G --gpus all --workers 40 ... with ...
    python -m experiments.sweep status -m HOST:27017:lottery          # the latest sweep, read from the database

The grid is the product of the shorthand flags (``--criteria``, ``--mask1``, ``--mask0``: ``schema.SWEEP_AXES``, for
the kinds that take them), ``--seeds`` and any ``--grid KEY=V1,V2``; everything after ``with`` applies to every run
(config updates and named configs, as for the experiment). Every point is configured, and so validated, before
anything starts. Each point is one unit of work: wherever it runs, it first claims its point
(``ticketlab.identity.point_hash`` of its config: everything but execution keys) in the run database
(``experiments.claims``), so a point that is COMPLETED or claimed by a live holder is never started twice, by this
sweep or any other on any host; a point whose holder died (no heartbeat for ``--stale-after`` seconds) is taken over
and its run resumed from its last finished round. Each run is ``python -m <the kind's module> with ... -m DB`` in
its own process pinned to ``--threads`` threads (default 1: two single-thread processes beat one two-thread
process). Where the units run is the executor's (``--executor``, ``experiments.executors``: ``local``, the default,
``--workers`` at a time on this machine, with ``--gpus`` a device per slot; ``dask``; ``slurm``): each declares its
own flags and checks.

The sweep shows the rounds done across all its runs with an ETA and which runs are running, retries a failed or
lost unit up to ``--retries`` times (it resumes), waits for points another sweep holds, and exits non-zero if
any point failed. ``--detach`` leaves the work running (how is the executor's); ``python -m experiments.sweep
status -m DB`` (``ticketlab status``) reports it later. Runs kept on disk while the database was down are uploaded
first. Per-run logs go to ``--logs``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import os
import secrets
import sys
import time
from collections import Counter
from pathlib import Path

import pymongo
import pymongo.errors
from sacred.arg_parser import get_config_updates
from sacred.initialize import create_run
from tqdm import tqdm

from experiments import claims, executors
from experiments.base import experiment as experiment_of
from experiments.executors import EXECUTORS, FAILED, HELD, LOST, Unit
from experiments.localdb import home_dir
from experiments.observers import SERVER_TIMEOUT_MS, upload_failed_runs
from experiments.progress import clock
from ticketlab import dbspec, kinds
from ticketlab.cli import Parser, add_database
from ticketlab.identity import point_hash, science_version, version_of
from ticketlab.schema import SWEEP_AXES

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
    add_database(parser)
    parser.add_argument("--experiment", choices=kinds.names(), default="lottery", help="the kind of experiment")
    for flag, path in SWEEP_AXES.items():
        parser.add_argument(f"--{flag}", default="1" if path == "seed" else None,
                            help=f"comma-separated {path} values" + (" (default 1)" if path == "seed" else ""))
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="another grid axis over any config key (repeatable)")
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
    parser.add_argument("--logs", type=Path, default=None, help="folder for per-run logs")
    parser.add_argument("--dry-run", action="store_true", help="list what would run, run nothing")
    parser.add_argument("--population", type=population_size, default=1, metavar="K|auto",
                        help="train up to K points that differ only in seed, criterion and treatment (supermask: "
                             "seed and settings) as one population in one process (experiments.population), "
                             "on this machine; with --gpus each population trains on one GPU slot; auto: K from "
                             "the GPU's memory and measured step time (experiments.population_size; 1 on a CPU)")
    parser.add_argument("--failure-dir", default=None, help="where runs kept during a database outage wait")
    parser.add_argument("--sweep-id", default=None, help=argparse.SUPPRESS)  # a detached local sweep's own id
    executors.add_arguments(parser)  # --executor and each executor's own flags
    return parser.parse_with(argv), parser


def population_size(text: str) -> int | str:
    """A ``--population`` value: a number, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or auto") from None


def build_axes(args, parser) -> dict[str, list[str]]:
    """The grid: the shorthand flags the kind takes (``schema.SWEEP_AXES``), then ``--grid``s, then the seeds."""
    axes = {}
    for flag, key in SWEEP_AXES.items():
        if key != "seed" and getattr(args, flag):
            if flag not in kinds.get(args.experiment).axes:
                takers = " and ".join(kind.name for _, kind in kinds.KINDS.items() if flag in kind.axes)
                parser.error(f"--{flag} applies to the {takers} experiment only")
            axes[key] = getattr(args, flag).split(",")
    for item in args.grid:
        key, _, values = item.partition("=")
        if not key or not values:
            parser.error(f"--grid {item!r} is not KEY=V1,V2")
        axes[key] = values.split(",")
    axes["seed"] = args.seeds.split(",")
    return axes


def check_execution(args, parser) -> list[str] | None:
    """The command line's execution flags checked before anything starts (one line naming the bad value), then the
    executor's own (``Executor.check``); the devices of this machine's slots, if the executor has them."""
    if args.workers < 1 or args.threads < 1 or args.runs_per_gpu < 1 or args.retries < 0:
        parser.error("--workers, --threads and --runs-per-gpu must be at least 1, --retries at least 0")
    if args.stale_after <= claims.SACRED_BEAT:
        parser.error(f"--stale-after {args.stale_after:g} must exceed Sacred's heartbeat of "
                     f"{claims.SACRED_BEAT:g} s")
    if args.population != "auto" and args.population < 1:
        parser.error(f"--population {args.population} must be at least 1")
    executor = executors.chosen(args, parser)
    if (args.population == "auto" or args.population > 1) and (not executor.populations or args.detach):
        takers = ", ".join(name for name, other in EXECUTORS.items() if other.populations)
        parser.error(f"--population runs on this machine: it takes --executor {takers} (with --gpus or without), "
                     f"not --detach")
    return executor.check(args, parser)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["status"]:
        return status(argv[1:])
    args, parser = parse_args(argv)
    devices = check_execution(args, parser)
    spec = parser.database(args)
    experiment = experiment_of(args.experiment)
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
    client = dbspec.connect(spec.url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    try:
        db = client[spec.db_name]
        try:
            if not args.sweep_id:
                for bundle, run_id in upload_failed_runs(spec.url, spec.db_name, args.failure_dir):
                    print(f"uploaded run {run_id} kept during a database outage ({bundle})")
            done = completed_hashes(spec.url, spec.db_name, experiment.path)
        except pymongo.errors.PyMongoError as error:
            print(f"error: {dbspec.unreachable(spec, error)}", file=sys.stderr)
            return 2
        return run_grid(args, argv, db, experiment.path, labels, points, configs, done, devices)
    finally:
        client.close()


def run_grid(args, argv, db, experiment: str, labels, points, configs, done: dict[str, set[str]], devices) -> int:
    """Run the grid's points that are not done (``done``: ``completed_hashes``) with the executor ``args`` name,
    or, with ``--population K``, in populations (``Executor.create_population``): every unit claims its point."""
    hashes = [point_hash(c) for c in configs]
    todo, versions = points_to_run(hashes, done, args.keep_other_versions)
    if versions:
        print(versions)
    science = None if args.keep_other_versions else science_version()
    where, keys, note = plan(args, configs, todo, devices)
    print(f"sweep: {len(points)} runs in the grid, {len(points) - len(todo)} already completed, {len(todo)} to run "
          f"{where}")
    if note:
        print(f"sweep: {note}")
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
    kind = kinds.get(args.experiment)
    records = [{"index": i, "label": labels[i], "updates": points[i], "condition": hashes[i], "science": science,
                **dict(zip(("work", "steps"), kind.work(configs[i])))} for i in range(len(points))]
    db[SWEEPS].replace_one({"_id": sweep_id}, {
        "_id": sweep_id, "experiment": experiment, "executor": args.executor, "created": claims.utcnow(),
        "host": os.uname().nodename, "logs": str(logs), "detached": args.detach, "points": records,
        "stale_after": args.stale_after, "command": ["python", "-m", "experiments.sweep", *argv]}, upsert=True)
    units = [Unit(index=i, experiment=args.experiment, updates=points[i], condition=hashes[i],
                  db_spec=args.mongo_db, threads=args.threads, device="cuda" if args.gpus and not devices else None,
                  stale_after=args.stale_after, log=str(logs / f"run_{i:04d}.log"), science=science) for i in todo]
    return execute(args, argv, db, sweep_id, logs, units, [records[i] for i in todo], devices, keys)


def plan(args, configs, todo: list[int], devices) -> tuple[str, dict | None, str]:
    """How the points to run go, for the sweep's first line; with ``--population K``, each point's population
    group (``experiments.population.group_key``); and a note for a population sweep on a CPU."""
    if args.population <= 1:
        return "with " + EXECUTORS.get(args.executor).describe(args, devices), None, ""
    from experiments import population  # compatible points trained together

    keys = {i: population.group_key(configs[i], args.experiment) for i in todo}
    groups = population.group([configs[i] for i in todo], args.population, args.experiment)
    alone = sum(len(members) == 1 for members in groups)
    where = (f"as {len(groups) - alone} population(s) of at most {args.population} and {alone} single run(s), "
             f"{len(devices) if devices else args.workers} at a time x {args.threads} thread(s)"
             + (f" on {', '.join(sorted(set(devices)))}" if devices else ""))
    return where, keys, population.CPU_NOTE if len(groups) > alone and not torch_cuda_available() else ""


def execute(args, argv, db, sweep_id: str, logs: Path, units: list[Unit], records: list[dict], devices,
            keys: dict | None) -> int:
    """The units through the executor to the end (``drive``), or left running (``--detach``)."""
    executor_class = EXECUTORS.get(args.executor)
    see = f"see {{}} with: python -m experiments.sweep status -m {args.mongo_db} --sweep {sweep_id}"
    if args.detach and (how := executor_class.detach_sweep(argv, sweep_id, logs)):
        print(f"sweep {sweep_id}: {how}; {see.format('it')}")
        return 0
    try:
        executor = executor_class.create(args, db, logs, devices) if keys is None else \
            executor_class.create_population(args, logs, devices, lambda unit: keys[unit.index])
    except (OSError, RuntimeError) as error:
        print(f"error: the {args.executor} executor did not start: {error}", file=sys.stderr)
        return 2
    try:
        if args.detach:
            executor.submit([dataclasses.replace(u, token=f"{sweep_id}/{u.index}/1") for u in units])
            executor.detach()
            print(f"sweep {sweep_id}: {len(units)} units left running on {args.executor}; {see.format('them')}")
            return 0
        progress = Progress(db, kinds.get(args.experiment).name, records, args.stale_after)
        try:
            failed = drive(executor, units, db, sweep_id, args.retries, args.stale_after, progress)
        finally:
            progress.close()
    except RuntimeError as error:  # sbatch refused the jobs (partition, time or memory the cluster cannot give)
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        executor.close()
    print(f"sweep: {len(units) - len(failed)} of {len(units)} runs completed; logs in {logs}")
    for unit, outcome in failed.values():
        print(f"  FAILED ({outcome}): with {' '.join(unit.updates)}  (log: {unit.log})", file=sys.stderr)
    return 1 if failed else 0


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def status(argv) -> int:
    """``python -m experiments.sweep status -m DB [--sweep ID]``: a sweep's points as the database has them."""
    parser = Parser(prog="python -m experiments.sweep status",
                    description="Report a sweep (default: the latest) from the run database.")
    add_database(parser)
    parser.add_argument("--sweep", default=None, help="the sweep id (printed when it started)")
    args = parser.parse_args(argv)
    spec = parser.database(args)
    with dbspec.connect(spec.url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS) as client:
        db = client[spec.db_name]
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
            print(f"error: {dbspec.unreachable(spec, error)}", file=sys.stderr)
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
