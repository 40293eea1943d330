"""The fault suite (``make faults``): real faults against real processes, each case counted.

Every case records a row with the ``fault_table`` fixture; at the end of the session pytest prints ONE table
(fault, times injected, runs finished, runs lost, runs duplicated, rounds lost, outcome). With
$TICKETLAB_FAULT_TABLE set, the rows are also written there as JSON.

"Injected" counts faults shown to have happened, never attempts: a signal counts when it went to a live process
(running, not exited, not a zombie) and the process's end shows it (killed by it, or the run's own INTERRUPTED
exit); a database kill when the server was alive and is gone after it (killed by SIGKILL, its pid gone, its port
refusing connections) while the runs it is aimed at still ran; a freeze when the server was stopped and clients'
writes were waiting in its sockets. A case whose fault did not happen fails.

$TICKETLAB_FAULT_DELAY (seconds, default 0) is added before every timed injection, which still comes at the latest
when the processes it aims at have all ended: ``TICKETLAB_FAULT_DELAY=600 make faults`` makes those faults
impossible (each lands after its runs ended), and every case that times one fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
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
    if failed and not rows:  # it failed before its row (e.g. its fault did not happen): a row says so
        record(request.node.name, injected=0, finished=0, outcome="FAILED")
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


# ------------------------------------------------------------------------------------------------ evidence

FAULT_DELAY = float(os.environ.get("TICKETLAB_FAULT_DELAY", "0"))


def before_injection(processes, seconds: float = 0.0) -> None:
    """Wait ``seconds`` plus $TICKETLAB_FAULT_DELAY before an injection, or until all ``processes`` have ended."""
    deadline = time.monotonic() + seconds + FAULT_DELAY
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))


def live(process: subprocess.Popen) -> bool:
    """The process exists and runs: not exited, not a zombie, not stopped."""
    if process.poll() is not None:
        return False
    try:
        return psutil.Process(process.pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD,
                                                            psutil.STATUS_STOPPED)
    except psutil.Error:
        return False


def signal_live(process: subprocess.Popen, sig) -> bool:
    """Send ``sig`` to the process if it lives; True when it went to a live process (whether the process then died
    of it, ``died_of`` tells once it ended)."""
    if not live(process):
        return False
    process.send_signal(sig)
    return True


def died_of(process: subprocess.Popen, sig, output: str = "") -> bool:
    """The ended process's exit shows ``sig``: killed by it, or, for SIGTERM and SIGINT, the run's own interrupt
    (exit status 130 and "INTERRUPTED" printed: ``experiments.base``)."""
    if process.returncode == -sig:
        return True
    return sig in (signal.SIGTERM, signal.SIGINT) and process.returncode == 130 and "INTERRUPTED" in output


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def kill_server(server) -> bool:
    """SIGKILL the database server; True when it was alive and is gone: killed by the signal, its pid no longer a
    process, its port refusing connections."""
    process = server.process
    if not signal_live(process, signal.SIGKILL):
        return False
    process.wait(30)
    return process.returncode == -signal.SIGKILL and not psutil.pid_exists(process.pid) and not port_open(server.port)


def pending_bytes(port: int) -> int:
    """Bytes that clients sent to 127.0.0.1:``port`` and the server has not read (its sockets' receive queues,
    from /proc/net/tcp): writes waiting on a frozen server."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
                    total += int(fields[4].split(":")[1], 16)
    return total


class Output:
    """The output of a process, read line by line as it comes (a thread), so that a case can time an injection on
    a line the run printed (stdout unbuffered: ``unbuffered``)."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.lines = process, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, predicate, timeout: float = 300) -> bool:
        """True once a line satisfies ``predicate``; False when the process ended (or ``timeout``) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(line) for line in list(self.lines)):
                return True
            if not self.thread.is_alive():
                return any(predicate(line) for line in self.lines)
            time.sleep(0.02)
        return False

    def finish(self, timeout: float = 300) -> str:
        """The whole output once the process ended (killed after ``timeout``)."""
        try:
            self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(30)
        self.thread.join(30)
        return "".join(self.lines)


def unbuffered(env: dict) -> dict:
    return dict(env, PYTHONUNBUFFERED="1")
