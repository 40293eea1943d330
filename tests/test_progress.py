"""The progress line: drawn on the real terminal (a pty here), throttled, cleared before each round line, and kept
out of the captured output the database stores."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys

from experiments.progress import Progress, clock


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_line_says_round_step_speed_and_etas():
    progress = Progress(50_000, last_round=24, first_round=0, stream=Terminal())
    progress.start = 0.0
    # rounds 0-2 and 1,200 steps of round 3 done in 315 s: 2.08 ms per step; 48,800 steps left in the round,
    # 1,098,800 in the run
    assert progress.line(3, 1200, 315.0) == "round 3/24  step 1200/50000  2.1 ms/step  ETA round 1:42, run 38:09"
    assert clock(100) == "1:40" and clock(3600 + 61) == "1:01:01"
    single = Progress(100, label="", stream=Terminal())  # a Supermask run: one training, no rounds
    assert single.line(0, 50, single.start + 0.1) == "step 50/100  2.0 ms/step  ETA 0:00"


def test_it_draws_only_on_a_terminal_and_at_most_once_per_interval():
    quiet = io.StringIO()
    Progress(100, stream=quiet).update(0, 50)
    assert quiet.getvalue() == ""  # not a TTY: nothing
    term = Terminal()
    progress = Progress(100, last_round=2, stream=term, interval=3600)
    progress.update(0, 50)
    progress.update(0, 100)  # within the interval: not drawn
    assert term.getvalue().count("\r") == 1 and "step 50/100" in term.getvalue()
    progress.close()
    assert term.getvalue().endswith("\r") and term.getvalue().count("\r") == 3


def test_progress_reaches_the_terminal_but_not_the_run_document(db_server, db_name, ticketlab_env):
    master, slave = pty.openpty()
    command = [sys.executable, "-m", "experiments.lottery", "-m", f"{db_server.address}:{db_name}", "with", "fast",
               "data.name=synthetic", "training.threads=1", "training.iterations=50", "pruning.rounds=1", "seed=3"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=ticketlab_env)
    os.close(slave)
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the run ended and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
        os.close(master)
    terminal = seen.decode(errors="replace")
    assert re.search(r"\rround 0/1  step (25|50)/50  [0-9.]+ ms/step  ETA round [0-9:]+, run [0-9:]+", terminal)
    run = db_server.client()[db_name]["runs"].find_one()
    assert run["status"] == "COMPLETED"
    stored = run["captured_out"]
    assert [line[:8] for line in stored.splitlines() if line.startswith("round")] == \
        ["round  0", "round  1"]
    assert "ETA" not in stored and "ms/step" not in stored and "\r" not in stored
