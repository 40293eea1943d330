"""The run database fails under running runs: killed (SIGKILL) mid-run and mid-sweep and restarted later, frozen
(SIGSTOP longer than the client timeout, then SIGCONT). Every finished run reaches the database once."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time

import psutil
import pytest

from tests.conftest import run_cli
from tests.faults.conftest import (BEAT, RUN, before_injection, finish, kill_server, live, metric_series, new_db,
                                   pending_bytes, round_rows, start, wait_until)

pytestmark = pytest.mark.faults

_REFERENCES: dict = {}


@pytest.fixture(scope="session")
def reference(db_server, tmp_path_factory):
    """``reference(*updates)``: (round rows, metric series) of an uninterrupted run of RUN + updates."""

    def get(*updates):
        if updates not in _REFERENCES:
            db = new_db()
            env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("ref")), OMP_NUM_THREADS="1",
                       PYTHONWARNINGS="ignore")
            result = run_cli("experiments.lottery", *RUN, *updates, "-m", f"{db_server.address}:{db}", env=env)
            assert result.returncode == 0, result.stderr
            client = db_server.client()
            doc = client[db]["runs"].find_one({})
            _REFERENCES[updates] = round_rows(doc), metric_series(client[db], doc["_id"])
        return _REFERENCES[updates]

    return get


def audit(db, references: dict, count_field="seed"):
    """(finished, lost, duplicated, rounds lost) of the runs in ``db`` against the expected conditions:
    ``references`` maps a seed to its uninterrupted run's (rounds, metrics)."""
    docs = list(db["runs"].find({}))
    by_seed: dict = {}
    for doc in docs:
        by_seed.setdefault(doc["config"][count_field], []).append(doc)
    finished = sum(1 for doc in docs if doc["status"] == "COMPLETED")
    lost = sum(1 for seed in references if not any(d["status"] == "COMPLETED" for d in by_seed.get(seed, [])))
    duplicated = sum(max(0, len(v) - 1) for v in by_seed.values())
    rounds_lost = 0
    for seed, (rounds, metrics) in references.items():
        done = [d for d in by_seed.get(seed, []) if d["status"] == "COMPLETED"]
        if not done:
            rounds_lost += len(rounds)
            continue
        doc = done[0]
        rounds_lost += sum(1 for r in rounds if r not in round_rows(doc))
        assert round_rows(doc) == rounds, f"seed {seed}: rounds differ from the uninterrupted run"
        assert metric_series(db, doc["_id"]) == metrics, f"seed {seed}: metric points lost or doubled"
    return finished, lost, duplicated, rounds_lost


def lottery_children(process) -> int:
    """How many runs (``experiments.lottery`` processes) a sweep process has running now."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        return 0
    running = 0
    for child in children:
        try:
            running += "experiments.lottery" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return running


def runs_past_round_0(server, seeds, fault_env):
    """Lottery runs of ``seeds`` on a fresh database of ``server``, once each has stored round 0:
    (spec, database, processes)."""
    spec = f"{server.address}:{new_db()}"
    runs = [start("experiments.lottery", "-m", spec, *BEAT, *RUN, f"seed={s}", env=fault_env) for s in seeds]
    db = server.client()[spec.rsplit(":", 1)[1]]
    try:
        wait_until(lambda: db["runs"].count_documents({"info.rounds.0": {"$exists": True}}) == len(seeds),
                   processes=runs)
    except BaseException:
        for run in runs:
            run.kill()
        raise
    return spec, db, runs


def test_database_killed_mid_run(own_server, fault_env, reference, fault_table, tmp_path):
    server, seeds = own_server(), (1, 2)
    spec, db, runs = runs_past_round_0(server, seeds, fault_env)
    db_name = db.name
    try:
        before_injection(runs)
        training = sum(live(p) for p in runs)  # mid-run: round 0 stored, the rest still training
        killed = kill_server(server)
        outputs = [finish(p) for p in runs]
    finally:
        for p in runs:
            finish(p, timeout=1) if p.poll() is None else None
    assert killed and training == len(seeds), f"the database was not killed under {len(seeds)} live runs"
    assert all(p.returncode == 0 for p in runs), outputs
    bundles = sorted((tmp_path / "failed").iterdir())  # each run met the dead server: it kept its run on disk
    assert len(bundles) == len(seeds), outputs
    printed = {re.search(r"is kept in .*Upload it later with: (.*)", out).group(1).strip() for out in outputs}
    assert len(printed) == 1, outputs  # both runs print the same command: the database and the failure folder

    time.sleep(1)  # the database stays down a while, then comes back on the same data and port
    server = own_server(server.storage, server.port)
    db = server.client()[db_name]
    # the command exactly as printed
    up = subprocess.run(printed.pop(), shell=True, env=fault_env, capture_output=True, text=True, timeout=120)
    assert up.returncode == 0 and up.stdout.count("uploaded run") == len(seeds), up.stdout + up.stderr
    references = {s: reference(f"seed={s}") for s in seeds}
    finished, lost, duplicated, rounds_lost = audit(db, references)
    assert db["runs"].count_documents({"status": "COMPLETED"}) == len(seeds)

    # the same bundles uploaded again: nothing new is stored (documents, metric points, artifact files)
    counts = {c: db[c].count_documents({}) for c in ("runs", "metrics", "fs.files", "fs.chunks")}
    for bundle in (tmp_path / "failed" / "uploaded").iterdir():
        shutil.move(str(bundle), tmp_path / "failed" / bundle.name)
    again = run_cli("experiments.upload", "-m", spec, env=fault_env)
    assert again.returncode == 0, again.stderr
    assert {c: db[c].count_documents({}) for c in counts} == counts
    assert audit(db, references) == (finished, lost, duplicated, rounds_lost)
    fault_table("database SIGKILL mid-run, restarted, uploaded twice", injected=int(killed), finished=finished,
                lost=lost, duplicated=duplicated, rounds_lost=rounds_lost)
    assert (lost, duplicated, rounds_lost) == (0, 0, 0)


def test_database_killed_mid_sweep(own_server, fault_env, reference, fault_table, tmp_path):
    server = own_server()
    db_name, seeds = new_db(), (1, 2, 3, 4)
    spec = f"{server.address}:{db_name}"
    sweep_args = ["experiments.sweep", "-m", spec, "--seeds", ",".join(map(str, seeds)), "--workers", "2",
                  "--logs", str(tmp_path / "logs"), *RUN]
    sweep = start(*sweep_args, env=fault_env)
    db = server.client()[db_name]
    try:
        wait_until(lambda: db["runs"].count_documents({"info.rounds.1": {"$exists": True}}) >= 1,
                   processes=[sweep])
        before_injection([sweep])
        training = lottery_children(sweep)  # the sweep's runs that meet the dead server
        killed = kill_server(server)
        first = finish(sweep)
    finally:
        finish(sweep, timeout=1) if sweep.poll() is None else None
    assert killed and training, "the database was not killed under a live run of the sweep"
    kept = len(list((tmp_path / "failed").iterdir()))  # runs that finished while it was down, kept on disk
    time.sleep(1)
    server = own_server(server.storage, server.port)
    db = server.client()[db_name]
    # the same sweep again: it uploads the kept runs first and runs only what is not COMPLETED
    second = run_cli(*sweep_args, env=fault_env, timeout=600)
    assert second.returncode == 0, first + second.stdout + second.stderr
    assert kept >= 1 and second.stdout.count("kept during a database outage") == kept, first + second.stdout
    references = {s: reference(f"seed={s}") for s in seeds}
    finished, lost, duplicated, rounds_lost = audit(db, references)
    fault_table(f"database SIGKILL mid-sweep ({training} runs training, {kept} kept on disk), restarted, sweep "
                "again", injected=int(killed), finished=finished, lost=lost, duplicated=duplicated,
                rounds_lost=rounds_lost)
    assert (lost, duplicated, rounds_lost) == (0, 0, 0)
    assert db["runs"].count_documents({"status": {"$ne": "COMPLETED"}}) == 0


def test_database_frozen(own_server, fault_env, reference, fault_table):
    server, seeds = own_server(), (1,)
    spec, db, runs = runs_past_round_0(server, seeds, fault_env)
    try:
        before_injection(runs)
        training = sum(live(p) for p in runs)
        # frozen 4 s (longer than the client's 1 s timeout) and until a run's write waits on it, 20 s at most: on a
        # busy machine a run may not write within the first 4 s
        server.process.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        waiting, stopped = 0, False  # bytes of the runs' writes the frozen server holds unread; its state
        while time.monotonic() - frozen_at < 4 or (not waiting and time.monotonic() - frozen_at < 20):
            time.sleep(0.2)
            stopped = stopped or psutil.Process(server.process.pid).status() == psutil.STATUS_STOPPED
            waiting = max(waiting, pending_bytes(server.port))
        seconds = time.monotonic() - frozen_at
        server.process.send_signal(signal.SIGCONT)
        outputs = [finish(p) for p in runs]
    finally:
        server.process.send_signal(signal.SIGCONT)
    frozen = stopped and training == len(seeds) and waiting > 0
    assert frozen, f"no write waited on a frozen server (stopped: {stopped}, runs training: {training}, " \
                   f"bytes waiting: {waiting})"
    assert all(p.returncode == 0 for p in runs), outputs
    references = {s: reference(f"seed={s}") for s in seeds}
    up = run_cli("experiments.upload", "-m", spec, env=fault_env)  # a run that had to keep its bundle uploads it
    assert up.returncode == 0, up.stderr
    finished, lost, duplicated, rounds_lost = audit(db, references)
    fault_table(f"database SIGSTOP {seconds:.0f} s (client timeout 1 s; {waiting} bytes of writes waiting), SIGCONT",
                injected=int(frozen), finished=finished, lost=lost, duplicated=duplicated, rounds_lost=rounds_lost)
    assert (lost, duplicated, rounds_lost) == (0, 0, 0)


def test_acknowledged_writes_survive_a_killed_server(own_server, fault_table):
    """Every write ticketlab makes goes through ``dbspec.connect`` (journaled): a write the server acknowledged is
    there after the server is SIGKILLed and restarted. (Without the journal SecantusDB lost about 30 of 200.)"""
    from ticketlab import dbspec

    server, injected, lost, trials = own_server(), 0, 0, 3
    for trial in range(trials):
        with dbspec.connect(server.uri) as client:
            for i in range(200):
                client.f.docs.insert_one({"trial": trial, "i": i})
                client.f.last.update_one({"_id": 1}, {"$set": {"i": i}}, upsert=True)
        injected += kill_server(server)
        server = own_server(server.storage, server.port)
        with server.client() as client:
            lost += 200 - client.f.docs.count_documents({"trial": trial})
            assert client.f.last.find_one({"_id": 1})["i"] == 199
    fault_table("database SIGKILL after 200 acknowledged writes (lost: writes)", injected=injected, finished=0, lost=lost)
    assert injected == trials and lost == 0
