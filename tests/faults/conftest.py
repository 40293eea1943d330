"""The fault suite (``make faults``): real faults against real processes, each case counted.

Every case records a row with the ``fault_table`` fixture; at the end of the session pytest prints ONE table
(fault, times injected, runs finished, runs lost, runs duplicated, rounds lost, outcome). With
$TICKETLAB_FAULT_TABLE set, the rows are also written there as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from experiments.localdb import DatabaseServer

ROWS: list[dict] = []
COLUMNS = ("fault", "injected", "finished", "lost", "duplicated", "rounds lost", "outcome")

# a lottery run of a few seconds: 4 rounds of 200 steps on synthetic data, one thread on the CPU (bit-identical run
# to run)
RUN = ["with", "fast", "data.name=synthetic", "training.threads=1", "training.device=cpu", "training.iterations=200",
       "training.eval_every=50", "pruning.rounds=3"]
ROUNDS = 4
BEAT = ["-b", "0.1"]  # heartbeats every 0.1 s: the database follows each round closely


@pytest.fixture
def fault_table(request):
    """``record(fault, injected=, finished=, lost=, duplicated=, rounds_lost=, outcome=None)``: one table row;
    the outcome is "ok" when nothing was lost or duplicated and the test passed."""
    rows = []

    def record(fault, *, injected, finished, lost=0, duplicated=0, rounds_lost=0, outcome=None):
        row = {"fault": fault, "injected": injected, "finished": finished, "lost": lost, "duplicated": duplicated,
               "rounds lost": rounds_lost, "outcome": outcome}
        rows.append(row)
        ROWS.append(row)
        return row

    yield record
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for row in rows:
        if row["outcome"] is None:
            row["outcome"] = "FAILED" if failed or row["lost"] or row["duplicated"] or row["rounds lost"] else "ok"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report


def format_table(rows) -> str:
    cells = [list(COLUMNS)] + [[str(row[c]) for c in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 or i == len(COLUMNS) - 1 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    total = {c: sum(row[c] for row in rows) for c in COLUMNS[1:-1]}
    said = sum(str(row["outcome"]).startswith("lost, said") for row in rows)  # the unavoidable loss, told
    bad = sum(row["outcome"] != "ok" for row in rows) - said
    lines.insert(1, "-" * len(lines[0]))
    lines.append("-" * len(lines[0]))
    lines.append("  ".join(["total".ljust(widths[0])] + [str(total[c]).rjust(w) for c, w in
                                                           zip(COLUMNS[1:-1], widths[1:-1])]
                           + [f"{len(rows) - bad - said} ok, {said} unavoidable loss(es) said, {bad} failed"]))
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    terminalreporter.section("fault table")
    terminalreporter.write_line(format_table(ROWS))
    if os.environ.get("TICKETLAB_FAULT_TABLE"):
        Path(os.environ["TICKETLAB_FAULT_TABLE"]).write_text(json.dumps(ROWS, indent=1))


# ------------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def own_server(tmp_path):
    """A database server of this test alone (it gets killed, frozen, restarted); stopped even when a test fails."""
    servers = []

    def make(storage=None, port=None):
        server = DatabaseServer(storage or tmp_path / "db" / "data", port=port)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        if server.process and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.fixture
def fault_env(tmp_path):
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path / "failed"), TICKETLAB_DATA=str(tmp_path / "data"),
               TICKETLAB_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               TICKETLAB_DB_TIMEOUT_MS="1000")
    return env


def new_db() -> str:
    return "f_" + uuid.uuid4().hex[:10]


def start(module, *args, env, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, **kwargs)


def finish(process, timeout=300) -> str:
    try:
        return process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)


def wait_until(condition, timeout=120, step=0.05, processes=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if processes and all(p.poll() is not None for p in processes):
            return condition()
        time.sleep(step)
    raise AssertionError("timed out waiting")


def round_rows(doc) -> list[tuple]:
    fields = ("round", "init_hash", "start_hash", "final_hash", "mask_hash", "test_acc", "early_stop_iteration")
    return [tuple(r[f] for f in fields) for r in doc.get("info", {}).get("rounds", [])]


def metric_series(db, run_id) -> dict:
    return {m["name"]: (list(m["steps"]), list(m["values"])) for m in db["metrics"].find({"run_id": run_id})}
