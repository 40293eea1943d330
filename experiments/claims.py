"""Claims: at most one live holder per condition, across sweeps and hosts, kept in the run database.

Beside ``runs``, the ``claims`` collection holds one document per condition (``_id``: the condition hash of
``analysis.conditions.condition_hash``, execution keys excluded)::

    {"_id": "3f2a...", "state": "RUNNING" | "FAILED" | "COMPLETED", "heartbeat": <UTC datetime>,
     "token": "<sweep>/<point>/<submission>@<host>:<pid>:<random>", "host": ..., "pid": ..., "pid_started": ...,
     "child_pid": ..., "child_started": ..., "slurm_job": "12" | None, "experiment": "lottery",
     "updates": [...], "attempts": 3, "run_id": 12, "rc": 0, "seconds": 81.2,   # the run process's wall time
     "decision": "resumed run 12 after round 3"}   # what the holder did with the point's unfinished runs

A unit of a sweep takes the claim with one atomic ``find_one_and_update(..., upsert=True)`` whose filter matches
only a claim nobody holds (FAILED, COMPLETED, or RUNNING with a heartbeat older than ``stale_after`` seconds); when
a live holder has it, the upsert inserts a second document with the same ``_id`` and the server answers with a
duplicate-key error: the claim is lost and nothing starts. A holder on this host whose process is gone (pid and
start time no longer alive) is taken over at once, by a compare-and-swap on its token. The holder beats the
claim's heartbeat while its run trains. The runs collection stays the truth about what is finished: a COMPLETED
claim only records who finished it, and a point counts as done when a COMPLETED run of its condition exists.

A unit that takes a point over first waits for any run of it that still trains (``run_alive``), then decides with
``takeover`` what to do with the dead ones: resume the one with the most finished rounds in its own document (even
with none listed: a kill can come after a round's artifact and before its record reached ``info.rounds``), or, only
when that run cannot be continued, start anew; the decision is one line (``Takeover.line``), which the unit writes
into its claim (``decision``) for the sweep to print.

Clocks: heartbeats are UTC datetimes from the holders' clocks, so hosts sharing a database should keep their
clocks in sync (NTP); ``stale_after`` should exceed Sacred's 10 s heartbeat by a wide margin (default 120 s).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket

import psutil
import pymongo
import pymongo.errors

COLLECTION = "claims"
RUNNING, FAILED, COMPLETED = "RUNNING", "FAILED", "COMPLETED"
DEFAULT_STALE_AFTER = 120.0  # seconds without a heartbeat after which a holder (or a RUNNING run) counts as dead
SACRED_BEAT = 10.0  # Sacred's heartbeat interval: a run's heartbeat is never fresher than this


def utcnow() -> datetime.datetime:
    """Naive UTC, as pymongo returns datetimes and Sacred stores heartbeats."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def process_started(pid: int) -> float | None:
    """Start time of a live process (None when it is gone or a zombie): a pid plus its start time names it."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def alive_here(host: str | None, pid: int | None, started: float | None) -> bool | None:
    """Whether that process lives: True/False on this host, None (cannot tell) on another host."""
    if host != socket.gethostname() or pid is None:
        return None
    now_started = process_started(pid)
    return now_started is not None and (started is None or abs(now_started - started) < 1.0)


def holder(token: str, **fields) -> dict:
    """The claim fields naming this process as holder."""
    pid = os.getpid()
    return {"token": token, "host": socket.gethostname(), "pid": pid, "pid_started": process_started(pid),
            "child_pid": None, "child_started": None, "dead": False, "decision": None,
            "slurm_job": os.environ.get("SLURM_JOB_ID"), **fields}


def is_claimable(claim: dict | None, stale_after: float, now: datetime.datetime | None = None) -> bool:
    """Nobody live holds it: absent, released, stale, or held by a process of this host that is gone."""
    if claim is None or claim.get("state") != RUNNING:
        return True
    cutoff = (now or utcnow()) - datetime.timedelta(seconds=stale_after)
    return claim["heartbeat"] < cutoff or alive_here(claim.get("host"), claim.get("pid"),
                                                     claim.get("pid_started")) is False


def acquire(db, condition: str, me: dict, stale_after: float) -> tuple[bool, dict | None]:
    """Take the claim of ``condition`` atomically: (True, the claim as it was before, or None) or (False, None)."""
    claims = db[COLLECTION]
    now = utcnow()
    update = {"$set": {**me, "state": RUNNING, "heartbeat": now}, "$inc": {"attempts": 1}}
    unheld = {"_id": condition, "$or": [{"state": {"$in": [FAILED, COMPLETED]}},
                                        {"heartbeat": {"$lt": now - datetime.timedelta(seconds=stale_after)}}]}
    try:
        return True, claims.find_one_and_update(unheld, update, upsert=True,
                                                return_document=pymongo.ReturnDocument.BEFORE)
    except pymongo.errors.DuplicateKeyError:
        pass  # somebody holds it, or held it until a moment ago
    current = claims.find_one({"_id": condition})
    if current is None or not is_claimable(current, stale_after):
        return False, None
    # held by a process of this host that died: swap its token for ours (fails if somebody else was quicker)
    before = claims.find_one_and_update({"_id": condition, "token": current.get("token"), "state": RUNNING},
                                        update, return_document=pymongo.ReturnDocument.BEFORE)
    return before is not None, before


def beat(db, condition: str, token: str, **fields) -> bool:
    """Refresh the heartbeat (and set ``fields``); False when the claim is no longer ours."""
    result = db[COLLECTION].update_one({"_id": condition, "token": token, "state": RUNNING},
                                       {"$set": {"heartbeat": utcnow(), **fields}})
    return result.matched_count == 1


def release(db, condition: str, token: str, state: str, **fields) -> None:
    db[COLLECTION].update_one({"_id": condition, "token": token},
                              {"$set": {"state": state, "heartbeat": utcnow(), **fields}})


def get(db, conditions) -> dict[str, dict]:
    return {c["_id"]: c for c in db[COLLECTION].find({"_id": {"$in": list(conditions)}})}


# ------------------------------------------------------------------------------------------ runs of a condition

def of_point(point: str) -> dict:
    """The query for the runs of a point (``ticketlab.identity.point_hash``): ``info.point``, or, in runs stored
    before it was named so, ``info.condition_hash``."""
    return {"$or": [{"info.point": point}, {"info.condition_hash": point}]}


def of_version(science: str | None) -> dict:
    """The query for runs made by science version ``science`` (any version when None)."""
    return {} if science is None else {"info.science.version": science}


def completed_run(db, experiment: str, condition: str, science: str | None = None) -> int | None:
    """The id of a COMPLETED run of this point (made by science version ``science``; any when None), if any."""
    doc = db["runs"].find_one({"experiment.name": experiment, "status": COMPLETED, **of_point(condition),
                               **of_version(science)}, {"_id": 1})
    return doc["_id"] if doc else None


def unfinished_runs(db, experiment: str, condition: str) -> list[dict]:
    """Runs of this condition that did not complete, most finished rounds first (then newest)."""
    from ticketlab.identity import point_hash

    ids = [doc["_id"] for doc in db["runs"].find({"experiment.name": experiment, "status": {"$ne": COMPLETED}},
                                                 {"config": 1})
           if point_hash(doc.get("config", {})) == condition]
    if not ids:
        return []
    runs = list(db["runs"].find({"_id": {"$in": ids}}, {"status": 1, "heartbeat": 1, "start_time": 1,
                                                        "info.rounds": 1, "info.science": 1,
                                                        "config.save_artifacts": 1}))
    return sorted(runs, key=lambda r: (len(listed_rounds(r)), r["_id"]), reverse=True)


def listed_rounds(run: dict) -> list[dict]:
    """The round records a run document lists as finished (``info.rounds``; none when absent)."""
    return (run.get("info") or {}).get("rounds") or []


def run_alive(run: dict, previous_claim: dict | None, stale_after: float,
              now: datetime.datetime | None = None) -> bool:
    """A RUNNING run still trains: its process (known from the previous claim, on this host) lives, or, where that
    cannot be told, its heartbeat is fresher than ``stale_after`` (at ``now``, default: the present)."""
    if run.get("status") != RUNNING:
        return False
    if previous_claim and previous_claim.get("dead"):
        return False  # its executor saw the job end (Slurm ends every process of a job)
    here = None
    if previous_claim:
        here = alive_here(previous_claim.get("host"), previous_claim.get("child_pid"),
                          previous_claim.get("child_started"))
    if here is not None:
        return here
    from experiments.resume import is_stale

    return not is_stale(run, stale_after, now=now)


def mark_dead(db, run_id: int) -> bool:
    """A RUNNING run whose process is gone becomes INTERRUPTED (what Omniboard and the sweep then see)."""
    return db["runs"].update_one({"_id": run_id, "status": RUNNING},
                                 {"$set": {"status": "INTERRUPTED", "stop_time": utcnow()}}).modified_count == 1


@dataclasses.dataclass(frozen=True)
class Takeover:
    """What a unit does with the dead runs of its point: continue ``resume_id`` in its own document, or start a new
    run (``resume_id`` None); ``line`` says which and why, for the sweep's output."""

    resume_id: int | None
    line: str


def not_resumable(run: dict, experiment: str, resumable: bool, science: str | None = None) -> str | None:
    """Why a dead run cannot be continued with ``--resume`` (None: it can, whatever rounds it lists); with
    ``science``, a run started by another science version cannot (its rounds would mix two versions)."""
    if not resumable:
        return f"{experiment} runs do not resume (run {run['_id']} was left unfinished)"
    if run.get("status") == "QUEUED":
        return f"run {run['_id']} is QUEUED, never started"
    if not (run.get("config") or {}).get("save_artifacts", False):
        return f"run {run['_id']} ran with save_artifacts=False (its weights were not stored)"
    from ticketlab.identity import version_of

    if science is not None and version_of(run) != science:
        return f"run {run['_id']} was started by science version {version_of(run)}, this is {science}"
    return None


def takeover(runs: list[dict], experiment: str, resumable: bool, science: str | None = None) -> Takeover | None:
    """The decision for the dead, unfinished ``runs`` of a point (``unfinished_runs``: most listed rounds first);
    None when there are none. The run listing the most finished rounds that can be continued is resumed, also when
    it lists none: ``--resume`` then trains it from round 0 in its own document, so the point keeps one document
    (whatever its process did not get into ``info.rounds`` before it died is trained again). A new run is started
    only when no dead run can be continued, and the line says why."""
    if not runs:
        return None
    for run in runs:
        if not_resumable(run, experiment, resumable, science) is None:
            rounds = listed_rounds(run)
            where = f"after round {rounds[-1]['round']}" if rounds else "at round 0 (no finished round stored)"
            return Takeover(run["_id"], f"resumed run {run['_id']} {where}")
    return Takeover(None, f"started anew: {not_resumable(runs[0], experiment, resumable, science)}")
