"""Where the units of a sweep run: this machine (``local``), a Dask distributed cluster (``dask``) or Slurm (``slurm``).

A unit is one point of the grid. Wherever it runs, ``run_unit`` does the same: it claims the point's condition in
the run database (``experiments.claims``), resumes a dead earlier run of it from its last finished round (round 0
when it lists none: the point keeps one document; ``claims.takeover``, the decision stored in the claim) or starts
``python -m experiments.<name> with ... -m DB`` as a subprocess (threads pinned through OMP/MKL/OPENBLAS_NUM_THREADS
and ``training.threads``; ``training.device`` when the executor gives it one), beats the claim while it trains and
releases it COMPLETED or FAILED. Its outcome is ``completed``, ``failed``, ``held`` (a live holder elsewhere has
it: nothing started) or, seen by the executor, ``lost`` (the worker or job died under it).

Executors only move units: ``submit(units)``, then ``finished(timeout)`` hands back ``(unit, outcome)`` pairs.

- ``LocalExecutor``: a thread pool of ``workers`` slots on this machine, each slot bound to a device when
  ``devices`` are given (``--gpus 0,1 --runs-per-gpu 2``: four slots, cuda:0, cuda:0, cuda:1, cuda:1).
- ``DaskExecutor``: ``run_unit`` as a task on an existing scheduler (``tcp://HOST:PORT``) or on a LocalCluster of
  ``workers`` single-thread worker processes on 127.0.0.1; with GPUs, each task asks for ``GPU=1/runs_per_gpu`` of
  the worker resource (start GPU workers with ``--resources GPU=1`` and their own CUDA_VISIBLE_DEVICES; a local
  cluster does that itself: one worker per GPU id, ``gpu_workers``). Dask moves the task of a lost worker to another
  worker; the claim makes that retry resume the run instead of repeating it.
- ``SlurmExecutor``: plain ``sbatch`` job arrays (no extra Python package, nothing to run on the login node but
  this command; the cluster's own scheduling, accounting and limits apply), one array task per unit running
  ``python -m experiments.executors BATCH.json`` with the sweep's python in the checkout's folder, so the cluster
  must share the checkout, the venv and the logs folder (the usual home or project file system). Logs:
  ``<logs>/slurm-<job>_<task>.out`` beside the runs' own logs. Job states come from ``squeue``; what a finished
  job did comes from the database.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import queue
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pymongo
import pymongo.errors

from experiments import claims
from experiments.observers import SERVER_TIMEOUT_MS
from experiments.resume import resume_command
from ticketlab import dbspec
from ticketlab.cli import Parser

COMPLETED, FAILED, HELD, LOST = "completed", "failed", "held", "lost"
RESUMABLE = {"lottery"}  # experiments whose runs continue from their last finished round
REPO = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class Unit:
    index: int  # the point's place in the sweep
    experiment: str
    updates: list[str]  # the point's ``with`` arguments (shared ones and its grid values)
    condition: str  # condition_hash of its resolved config
    db_spec: str
    token: str = ""  # <sweep>/<index>/<submission>; its claim's token adds @host:pid:random
    threads: int = 1
    device: str | None = None  # training.device for this unit, or None for the run's default
    stale_after: float = claims.DEFAULT_STALE_AFTER
    log: str | None = None
    science: str | None = None  # the science version a COMPLETED run of the point must have (None: any)

    def label(self) -> str:
        return " ".join(self.updates)


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a run pinned to ``threads`` threads (Dask workers would otherwise force one)."""
    return {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def execution_updates(threads: int, device: str | None = None) -> list[str]:
    """The ``with`` arguments that say how a run (or a population) executes: its threads and, when given, device."""
    return [f"training.threads={threads}"] + ([f"training.device={device}"] if device else [])


def run_command(unit: Unit, resume_id: int | None = None) -> list[str]:
    """The run's command line: a fresh run of the point, or ``--resume`` of a dead run of it."""
    execution = execution_updates(unit.threads, unit.device)
    if resume_id is not None:
        return resume_command(resume_id, unit.db_spec, execution, experiment=unit.experiment)
    return [sys.executable, "-m", f"experiments.{unit.experiment}", "with", *unit.updates, *execution,
            "-m", unit.db_spec]


class _ClaimBeat(threading.Thread):
    """Beats the claims of ``units`` (one run's, or a population's) every ``interval`` s; when one was taken over,
    stops the child (SIGTERM): its runs are resumed by whoever holds their points now."""

    def __init__(self, db, units: Unit | list[Unit], interval: float):
        super().__init__(daemon=True)
        self.db, self.units, self.interval = db, units if isinstance(units, list) else [units], interval
        self.child: subprocess.Popen | None = None
        self.lost = False
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.interval):
            try:
                if not all([claims.beat(self.db, unit.condition, unit.token) for unit in self.units]):
                    self.lost = True
                    if self.child and self.child.poll() is None:
                        self.child.terminate()
                    return
            except pymongo.errors.PyMongoError:
                pass  # the database is down: the run keeps going (and keeps its results on disk)


def beat_interval(unit: Unit) -> float:
    return max(0.5, min(claims.SACRED_BEAT, unit.stale_after / 4))


def _execution(unit: Unit) -> str:
    """The unit's token made this execution's own: Dask may run a submission again after a worker loss."""
    return f"{unit.token}@{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


def _log(log, message: str) -> None:
    log.write(f"[sweep unit {time.strftime('%H:%M:%S')}] {message}\n")
    log.flush()


def run_unit(unit: Unit) -> str:
    """Claim the unit's condition and run (or resume) it; see the module docstring. Returns the outcome."""
    unit = dataclasses.replace(unit, token=_execution(unit))
    spec = dbspec.parse(unit.db_spec)
    client = dbspec.connect(spec.url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    log = open(unit.log, "a") if unit.log else open(os.devnull, "w")
    try:
        db = client[spec.db_name]
        me = claims.holder(unit.token, experiment=unit.experiment, updates=unit.updates)
        taken, before = claims.acquire(db, unit.condition, me, unit.stale_after)
        if not taken:
            _log(log, f"{unit.label()}: claimed by a live holder elsewhere; not started")
            return HELD
        beat = _ClaimBeat(db, unit, interval=beat_interval(unit))
        beat.start()
        try:
            return _run_claimed(db, unit, before, beat, log)
        finally:
            beat.done.set()
    finally:
        log.close()
        client.close()


def _run_claimed(db, unit: Unit, before: dict | None, beat: _ClaimBeat, log) -> str:
    def finish(state: str, **fields) -> str:
        claims.release(db, unit.condition, unit.token, state, **fields)
        return COMPLETED if state == claims.COMPLETED else FAILED

    previous = claims.unfinished_runs(db, unit.experiment, unit.condition)
    while any(claims.run_alive(run, before, unit.stale_after) for run in previous):
        # a run of this point still trains (an orphan of a dead holder): let it finish or die first
        time.sleep(1.0)
        previous = claims.unfinished_runs(db, unit.experiment, unit.condition)
    done = claims.completed_run(db, unit.experiment, unit.condition, unit.science)
    if done is not None:
        _log(log, f"{unit.label()}: already COMPLETED as run {done}")
        return finish(claims.COMPLETED, run_id=done, rc=0)
    for run in previous:
        if claims.mark_dead(db, run["_id"]):
            _log(log, f"run {run['_id']} was RUNNING with no live process: marked INTERRUPTED")
    decision = claims.takeover(previous, unit.experiment, unit.experiment in RESUMABLE, unit.science)
    resume_id = decision.resume_id if decision else None
    if decision:
        _log(log, decision.line)
        claims.beat(db, unit.condition, unit.token, decision=decision.line)  # the sweep prints it
    command = run_command(unit, resume_id)
    log.write(dbspec.scrub(" ".join(shlex.quote(part) for part in command)) + "\n")
    log.flush()
    started = time.monotonic()
    child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, **thread_env(unit.threads)), cwd=os.getcwd())
    beat.child = child
    claims.beat(db, unit.condition, unit.token, child_pid=child.pid,
                child_started=claims.process_started(child.pid))
    rc = child.wait()
    seconds = round(time.monotonic() - started, 3)
    if beat.lost:
        _log(log, "the claim was taken over by another holder: this run was stopped")
        return HELD
    done = claims.completed_run(db, unit.experiment, unit.condition, unit.science)
    _log(log, f"exit code {rc} after {seconds:.1f} s" + (f"; run {done} COMPLETED" if done is not None else ""))
    return finish(claims.COMPLETED if done is not None else claims.FAILED, run_id=done, rc=rc, seconds=seconds)


def run_group(units: list[Unit], command, log_path: str) -> tuple[dict[int, str], list[Unit]]:
    """Claim the points of ``units`` (points a population can train side by side) and train the claimed ones
    together, ``command(claimed units)`` in one process, beating every claim while it trains; each claim is then
    released COMPLETED or FAILED by what the database holds, as ``run_unit`` does for one point. Returns each
    unit's outcome, and the units to run alone (``run_unit``): points that already have a run (dead: it is
    resumed in its own document; alive: it is waited for), and a lone claimed point (a population of one is a
    single run). A point a live holder has is ``held``."""
    spec = dbspec.parse(units[0].db_spec)
    client = dbspec.connect(spec.url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    outcomes: dict[int, str] = {}
    claimed, alone = [], []
    try:
        db = client[spec.db_name]
        with open(log_path, "a") as log:
            for unit in units:
                mine = dataclasses.replace(unit, token=_execution(unit))
                taken, _ = claims.acquire(db, unit.condition, claims.holder(
                    mine.token, experiment=unit.experiment, updates=unit.updates), unit.stale_after)
                if not taken:
                    _log(log, f"{unit.label()}: claimed by a live holder elsewhere; not started")
                    outcomes[unit.index] = HELD
                elif (done := claims.completed_run(db, unit.experiment, unit.condition, unit.science)) is not None:
                    _log(log, f"{unit.label()}: already COMPLETED as run {done}")
                    claims.release(db, unit.condition, mine.token, claims.COMPLETED, run_id=done, rc=0)
                    outcomes[unit.index] = COMPLETED
                elif claims.unfinished_runs(db, unit.experiment, unit.condition):
                    # a run of it exists: run_unit waits for it or resumes it in its own document
                    claims.release(db, unit.condition, mine.token, claims.FAILED)
                    alone.append(unit)
                else:
                    claimed.append(mine)
            if len(claimed) == 1:
                claims.release(db, claimed[0].condition, claimed[0].token, claims.FAILED)
                alone.append(next(u for u in units if u.index == claimed[0].index))
                claimed = []
            if not claimed:
                return outcomes, alone
            beat = _ClaimBeat(db, claimed, interval=beat_interval(claimed[0]))
            beat.start()
            try:
                argv = command(claimed)
                log.write(dbspec.scrub(shlex.join(argv)) + "\n")  # as a shell takes it; a password in -m stays out
                log.flush()
                started = time.monotonic()
                child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=dict(os.environ, **thread_env(claimed[0].threads)), cwd=os.getcwd())
                beat.child = child
                for unit in claimed:
                    claims.beat(db, unit.condition, unit.token, child_pid=child.pid,
                                child_started=claims.process_started(child.pid))
                rc = child.wait()
            finally:
                beat.done.set()
            seconds = round(time.monotonic() - started, 3)
            for unit in claimed:
                done = claims.completed_run(db, unit.experiment, unit.condition, unit.science)
                if beat.lost and done is None:
                    outcomes[unit.index] = HELD  # taken over: its new holder resumes it
                    continue
                state = claims.COMPLETED if done is not None else claims.FAILED
                claims.release(db, unit.condition, unit.token, state, run_id=done, rc=rc, seconds=seconds)
                outcomes[unit.index] = COMPLETED if done is not None else FAILED
            _log(log, f"exit code {rc} after {seconds:.1f} s; {sum(o == COMPLETED for o in outcomes.values())} of "
                      f"{len(claimed)} members COMPLETED")
    finally:
        client.close()
    return outcomes, alone


def population_command(units: list[Unit], shared: list[str], threads: int, device: str | None = None) -> list[str]:
    """The command that trains ``units`` (their own ``with`` arguments after the ``shared`` ones) as one
    population (``experiments.population``), on ``device``."""
    members = [unit.updates[len(shared):] for unit in units]
    return [sys.executable, "-m", "experiments.population", "-m", units[0].db_spec, "--experiment",
            units[0].experiment, "--members", "; ".join(",".join(member) for member in members),
            "with", *shared, *execution_updates(threads, device)]


class _FutureExecutor:
    """Shared part of the executors whose units are futures (concurrent.futures or Dask)."""

    def __init__(self):
        self.futures: dict = {}

    def finished(self, timeout: float) -> list[tuple[Unit, str]]:
        if not self.futures:
            time.sleep(timeout)
            return []
        done, _ = self._wait(list(self.futures), timeout)
        return [pair for future in done for pair in self._outcomes(future, self.futures.pop(future))]

    def _outcomes(self, future, unit: Unit) -> list[tuple[Unit, str]]:
        """What a finished future's units did."""
        try:
            return [(unit, future.result())]
        except Exception as error:  # noqa: BLE001  a lost worker (KilledWorker) or a crash of run_unit
            print(f"sweep: unit {unit.index} ({unit.label()}) lost: {error.__class__.__name__}: {dbspec.scrub(error)}",
                  file=sys.stderr)
            return [(unit, LOST)]

    def running(self) -> int:
        return len(self.futures)


class LocalExecutor(_FutureExecutor):
    name = "local"

    def __init__(self, workers: int, devices: list[str] | None = None):
        super().__init__()
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.slots: queue.Queue = queue.Queue()
        for device in devices or [None] * workers:
            self.slots.put(device)

    def _on_slot(self, unit: Unit) -> str:
        device = self.slots.get()
        try:
            return run_unit(dataclasses.replace(unit, device=device or unit.device))
        finally:
            self.slots.put(device)

    def submit(self, units: list[Unit]) -> None:
        for unit in units:
            self.futures[self.pool.submit(self._on_slot, unit)] = unit

    @staticmethod
    def _wait(futures, timeout):
        return concurrent.futures.wait(futures, timeout, return_when=concurrent.futures.FIRST_COMPLETED)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class PopulationExecutor(LocalExecutor):
    """``LocalExecutor`` whose slots train populations: submitted units are grouped by ``key`` (points that can share
    a population: ``experiments.population.group_key``) into populations of at most ``size``, each claimed point
    by point and trained in one process (``run_group``); the points a population cannot take (a run of them exists,
    a population of one) run as single units. A failed or lost member comes back to the sweep as a unit that is
    retried alone (it resumes)."""

    name = "local"

    def __init__(self, workers: int, size: int, key, shared: list[str], threads: int, logs: Path,
                 devices: list[str] | None = None):
        super().__init__(workers, devices)
        self.size, self.key, self.shared, self.threads, self.logs = size, key, shared, threads, logs
        self.groups = 0

    def submit(self, units: list[Unit]) -> None:
        groups: dict[str, list[Unit]] = {}
        for unit in units:
            groups.setdefault(self.key(unit), []).append(unit)
        for members in groups.values():
            for start in range(0, len(members), self.size):
                chunk = members[start:start + self.size]
                if len(chunk) == 1:
                    super().submit(chunk)
                    continue
                log = self.logs / f"population_{self.groups:04d}.log"
                self.groups += 1
                self.futures[self.pool.submit(self._on_slot_group, chunk, log)] = chunk

    def _on_slot_group(self, units: list[Unit], log: Path) -> tuple[dict[int, str], list[Unit]]:
        device = self.slots.get()
        try:
            return run_group(units, lambda claimed: population_command(claimed, self.shared, self.threads, device),
                             str(log))
        finally:
            self.slots.put(device)

    def _outcomes(self, future, submitted: Unit | list[Unit]) -> list[tuple[Unit, str]]:
        if isinstance(submitted, Unit):  # a single unit
            return super()._outcomes(future, submitted)
        try:
            outcomes, alone = future.result()
        except Exception as error:  # noqa: BLE001  the population's own machinery failed: its points retry
            print(f"sweep: a population of {len(submitted)} lost: {type(error).__name__}: {dbspec.scrub(error)}",
                  file=sys.stderr)
            outcomes, alone = {unit.index: LOST for unit in submitted}, []
        for unit in alone:  # points with a run of their own: each alone, as run_unit does
            self.futures[self.pool.submit(self._on_slot, unit)] = unit
        return [(unit, outcomes[unit.index]) for unit in submitted if unit.index in outcomes]

    def running(self) -> int:
        return sum(1 if isinstance(s, Unit) else len(s) for s in self.futures.values())


class DaskExecutor(_FutureExecutor):
    name = "dask"

    def __init__(self, scheduler: str, workers: int = 2, gpu_share: float | None = None,
                 gpus: list[str] | None = None):
        """Units on ``scheduler`` (``tcp://HOST:PORT``, or ``local``: a cluster of ``workers`` single-thread worker
        processes on 127.0.0.1). With ``gpu_share``, each unit needs that share of a worker's resource ``GPU``; a
        local cluster then has one worker per id in ``gpus`` (``gpu_workers``) instead of ``workers``."""
        super().__init__()
        from distributed import Client, LocalCluster, SpecCluster

        self.cluster = None
        if scheduler == "local" and gpu_share:
            if not gpus:
                raise ValueError("a local Dask cluster for GPU runs needs the GPU ids (--gpus)")
            self.cluster = SpecCluster(workers=gpu_workers(gpus, max(1, round(1 / gpu_share))),
                                       scheduler=_local_scheduler(), silence_logs=logging.WARN)
            self.client = Client(self.cluster)
        elif scheduler == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            self.client = Client(scheduler, timeout=30)
        self.resources = {"GPU": gpu_share} if gpu_share else None

    def submit(self, units: list[Unit]) -> None:
        for unit in units:
            future = self.client.submit(run_unit, unit, key=f"ticketlab-{unit.token.replace('/', '-')}", pure=False,
                                        resources=self.resources)
            self.futures[future] = unit

    @staticmethod
    def _wait(futures, timeout):
        from distributed import wait

        try:
            return wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return [], futures

    def detach(self) -> None:
        from distributed import fire_and_forget

        fire_and_forget(list(self.futures))
        self.futures.clear()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _local_scheduler() -> dict:
    from distributed import Scheduler

    return {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0, "dashboard": False,
                                          "dashboard_address": None}}


def gpu_workers(gpus: list[str], runs_per_gpu: int = 1) -> dict[str, dict]:
    """Dask worker specs (``SpecCluster``) of a local cluster for GPU runs: one worker process per GPU id, which
    sees only its GPU (``CUDA_VISIBLE_DEVICES``, inherited by the runs it starts, which use ``cuda``), offers the
    resource ``GPU=1`` and runs up to ``runs_per_gpu`` units at a time."""
    from distributed import Nanny

    return {f"gpu-{gpu}": {"cls": Nanny, "options": {
        "host": "127.0.0.1", "nthreads": runs_per_gpu, "resources": {"GPU": 1}, "dashboard": False,
        "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}, "silence_logs": logging.WARN}} for gpu in gpus}


class SlurmExecutor:
    """Units as ``sbatch`` job arrays; see the module docstring."""

    name = "slurm"
    ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}

    def __init__(self, db, logs: Path, threads: int, max_running: int | None = None, partition: str | None = None,
                 time_limit: str | None = None, mem: str | None = None, gpus: int = 0,
                 extra: list[str] | None = None):
        self.db, self.logs, self.threads = db, Path(logs), threads
        self.options = [f"--cpus-per-task={threads}"]
        self.options += [f"--partition={partition}"] if partition else []
        self.options += [f"--time={time_limit}"] if time_limit else []
        self.options += [f"--mem={mem}"] if mem else []
        self.options += [f"--gres=gpu:{gpus}"] if gpus else []
        self.options += extra or []
        self.max_running = max_running
        self.jobs: dict[str, dict[int, Unit]] = {}  # job id -> array task id -> unit
        self.batches = 0

    def sbatch_command(self, batch: Path, n: int) -> list[str]:
        array = f"0-{n - 1}" + (f"%{self.max_running}" if self.max_running else "")
        return ["sbatch", "--parsable", f"--array={array}", f"--job-name=ticketlab-{batch.stem}",
                f"--chdir={REPO}", f"--output={self.logs}/slurm-%A_%a.out", "--export=ALL", *self.options,
                f"--wrap=exec {shlex.quote(sys.executable)} -m experiments.executors {shlex.quote(str(batch))}"]

    def submit(self, units: list[Unit]) -> None:
        if not units:
            return
        self.batches += 1
        batch = self.logs / f"batch_{self.batches:03d}.json"
        batch.write_text(json.dumps([dataclasses.asdict(u) for u in units], indent=1))
        result = subprocess.run(self.sbatch_command(batch, len(units)), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr.strip()}")
        job = result.stdout.strip().split(";")[0]
        self.jobs[job] = dict(enumerate(units))

    def _states(self, job: str) -> dict[int, str]:
        result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T"], capture_output=True,
                                text=True)
        states = {}
        for line in result.stdout.split("\n"):
            if "_" in line:
                task, _, state = line.partition(" ")
                task_id = task.split("_", 1)[1]
                if task_id.isdigit():
                    states[int(task_id)] = state.strip()
        return states

    def outcome(self, unit: Unit) -> str:
        """What a unit whose job ended did, read from the database (the job leaves nothing else behind)."""
        if claims.completed_run(self.db, unit.experiment, unit.condition, unit.science) is not None:
            return COMPLETED
        claim = claims.get(self.db, [unit.condition]).get(unit.condition)
        if claim is None or claim.get("token", "").split("@")[0] != unit.token:
            return HELD  # somebody else holds the point, or the job ended before it claimed anything
        if claim["state"] == claims.RUNNING:
            # Slurm ended the job and every process of it: the claim and its run are dead, known for sure
            claims.release(self.db, unit.condition, claim["token"], claims.FAILED, dead=True)
            return LOST
        return FAILED

    def finished(self, timeout: float) -> list[tuple[Unit, str]]:
        time.sleep(timeout)
        out = []
        for job, tasks in list(self.jobs.items()):
            states = self._states(job)
            for task, unit in list(tasks.items()):
                if task not in states or states[task] in self.ENDED:
                    del tasks[task]
                    out.append((unit, self.outcome(unit)))
            if not tasks:
                del self.jobs[job]
        return out

    def running(self) -> int:
        return sum(len(tasks) for tasks in self.jobs.values())

    def detach(self) -> None:
        self.jobs.clear()

    def close(self) -> None:
        pass


def main(argv=None) -> int:
    """A Slurm array task: ``python -m experiments.executors BATCH.json`` runs unit $SLURM_ARRAY_TASK_ID."""
    parser = Parser(prog="python -m experiments.executors",
                    description="Run one unit of a sweep's batch: the Slurm array task $SLURM_ARRAY_TASK_ID's.")
    parser.add_argument("batch", type=Path, help="the batch file the sweep wrote (batch_NNN.json)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    units = json.loads(args.batch.read_text())
    unit = Unit(**units[int(os.environ["SLURM_ARRAY_TASK_ID"])])
    outcome = run_unit(unit)
    print(f"unit {unit.index} ({unit.label()}): {outcome}")
    return 1 if outcome == FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
