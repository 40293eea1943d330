"""A unit of a sweep, and what it does wherever an executor runs it.

A unit is one point of the grid. Wherever it runs, ``run_unit`` does the same: it claims the point's condition in
the run database (``experiments.claims``), resumes a dead earlier run of it from its last finished round (round 0
when it lists none: the point keeps one document; ``claims.takeover``, the decision stored in the claim) or starts
``python -m <the kind's module> with ... -m DB`` as a subprocess (threads pinned through
OMP/MKL/OPENBLAS_NUM_THREADS and ``training.threads``; ``training.device`` when the executor gives it one), beats the
claim while it trains and releases it COMPLETED or FAILED. Its outcome is ``completed``, ``failed``, ``held`` (a
live holder elsewhere has it: nothing started) or, seen by the executor, ``lost`` (the worker or job died under
it). ``run_group`` does the same for the points of one population, trained together in one process.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shlex
import socket
import subprocess
import sys
import threading
import time

import pymongo.errors

from experiments import claims
from experiments.observers import SERVER_TIMEOUT_MS
from experiments.resume import resume_command
from ticketlab import dbspec, kinds

COMPLETED, FAILED, HELD, LOST = "completed", "failed", "held", "lost"


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
    return [sys.executable, "-m", kinds.get(unit.experiment).module, "with", *unit.updates, *execution,
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
    decision = claims.takeover(previous, unit.experiment, kinds.get(unit.experiment).resumable, unit.science)
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
