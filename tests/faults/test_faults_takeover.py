"""Issue 25: a lottery run started by hand (no claim) is SIGKILLed; 17 s later a sweep of its point with
--stale-after 15 takes it over, with busy processes on every core. The sweep must resume the run in its own
document, whatever the kill left listed in ``info.rounds``: one COMPLETED document per point, its rounds and metrics
those of an uninterrupted run, and the sweep's line saying from where it resumed.

Repeated ($TICKETLAB_TAKEOVER_REPEATS times, default 3) under $TICKETLAB_LOAD_PER_CORE busy processes per core
(default 2: a load average of about 6 on 2 cores with the runs, the sweep and the database). The kill is timed on
what the run stored, cycling through: its init.pt stored (no round finished), its round_01.pt stored (round 1's
record may not be listed yet), its "round  1:" line printed (the issue's case)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.faults.conftest import (RUN, Output, before_injection, died_of, new_db, signal_live, unbuffered,
                                   wait_until)
from tests.faults.test_faults_database import audit, reference  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPEATS = int(os.environ.get("TICKETLAB_TAKEOVER_REPEATS", "3"))
LOAD_PER_CORE = int(os.environ.get("TICKETLAB_LOAD_PER_CORE", "2"))


@pytest.fixture
def busy_cores():
    """LOAD_PER_CORE busy processes per core (a bare Python loop each) while the test runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(LOAD_PER_CORE *
                                                                                         os.cpu_count())]
    yield len(loops)
    for loop in loops:
        loop.kill()
        loop.wait()


def stored(db, name: str) -> bool:
    return db["fs.files"].count_documents({"filename": f"artifact://runs/1/{name}"}, limit=1) > 0


# when the kill comes: (what it waits for, in words; the condition on the database or on the printed output)
KILL_POINTS = (
    ("init.pt stored, no round finished", lambda db, output: stored(db, "init.pt")),
    ("round_01.pt stored", lambda db, output: stored(db, "round_01.pt")),
    ("'round  1:' printed", lambda db, output: any(line.startswith("round  1:") for line in list(output.lines))),
)


DECISION = re.compile(r"^sweep: .*?: ((?:resumed run|started anew).*)$")


def expected_line(listed: list[dict]) -> str:
    return f"resumed run 1 after round {listed[-1]['round']}" if listed else \
        "resumed run 1 at round 0 (no finished round stored)"


def test_sweep_takes_over_a_killed_hand_run_under_load(db_server, fault_env, reference, fault_table, tmp_path,
                                                       busy_cores):
    references = {1: reference("seed=1")}
    env = unbuffered(fault_env)
    loads, kills, passed, failures, totals = [], 0, 0, [], [0, 0, 0, 0]  # finished, lost, duplicated, rounds lost
    for repeat in range(REPEATS):
        what, reached = KILL_POINTS[repeat % len(KILL_POINTS)]
        spec = f"{db_server.address}:{new_db()}"
        db = db_server.client()[spec.rsplit(":", 1)[1]]
        run = subprocess.Popen([sys.executable, "-m", "experiments.lottery", "-m", spec, *RUN, "seed=1"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        output = Output(run)
        wait_until(lambda: reached(db, output), timeout=300, processes=[run])
        before_injection([run])
        sent = signal_live(run, signal.SIGKILL)
        output.finish()
        killed = sent and died_of(run, signal.SIGKILL)
        kills += killed
        doc = db["runs"].find_one({"_id": 1})
        listed = doc["info"].get("rounds", []) if doc else []
        time.sleep(17)  # the timing: the sweep starts 17 s after the kill, --stale-after 15
        loads.append(os.getloadavg()[0])
        sweep = subprocess.run([sys.executable, "-m", "experiments.sweep", "-m", spec, "--seeds", "1", "--workers",
                                "1", "--stale-after", "15", "--logs", str(tmp_path / f"logs{repeat}"), *RUN],
                               env=fault_env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        loads.append(os.getloadavg()[0])
        try:
            finished, lost, duplicated, rounds_lost = audit(db, references)
            differs = None
        except AssertionError as error:  # the completed run's rounds or metrics differ from the uninterrupted run's
            (finished, lost, duplicated, rounds_lost), differs = (0, 0, 0, 0), str(error)
        totals = [t + n for t, n in zip(totals, (finished, lost, duplicated, rounds_lost))]
        decisions = [m.group(1) for m in map(DECISION.match, sweep.stdout.splitlines()) if m]
        problems = [text for text, bad in (
            ("the kill did not land on the live run", not killed), (differs, differs),
            (f"sweep exit status {sweep.returncode}", sweep.returncode != 0),
            (f"{duplicated} extra document(s)", duplicated), (f"{lost} point(s) lost", lost),
            (f"{rounds_lost} round(s) lost", rounds_lost),
            (f"printed {decisions}, not [{expected_line(listed)!r}]", decisions != [expected_line(listed)])) if bad]
        print(f"repeat {repeat + 1}/{REPEATS}: killed at {what} (listed rounds {[r['round'] for r in listed]}); "
              f"load {loads[-2]:.1f}-{loads[-1]:.1f}; {'; '.join(problems) or 'resumed in place'}")
        if problems:
            failures.append(f"repeat {repeat + 1} ({what}): {'; '.join(problems)}\n{sweep.stdout}{sweep.stderr}")
        else:
            passed += 1
    mean_load = sum(loads) / len(loads)
    print(f"takeover under load: {passed} of {REPEATS} resumed in place; load average (1 min) at the sweeps: mean "
          f"{mean_load:.1f}, {min(loads):.1f}-{max(loads):.1f}, {busy_cores} busy processes on {os.cpu_count()} cores")
    fault_table(f"hand run SIGKILLed, sweep takes over 17 s later under load {mean_load:.1f} ({passed}/{REPEATS} "
                "in place)", injected=kills, finished=totals[0], lost=totals[1], duplicated=totals[2],
                rounds_lost=totals[3], outcome=None if not failures else "FAILED")
    assert kills == REPEATS, "not every kill landed on a live run"
    assert not failures, "\n".join(failures)
