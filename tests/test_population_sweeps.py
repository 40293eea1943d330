"""Population sweeps claim each point through the same claims as single-run sweeps (``executors.run_group``):
two population sweeps of one grid at once, a population sweep beside a single-run sweep, and a killed population
taken over by the next sweep all end with every point COMPLETED exactly once. Real processes, a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from ticketlab.identity import point_hash

FAST = ["fast", "data.name=synthetic", "training.device=cpu", "pruning.rounds=3"]


def sweep(spec: str, logs, env, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments.sweep", "-m", spec, "--criteria",
                             "large_final,random", "--seeds", "1,2", "--workers", "1", "--logs", str(logs), *extra,
                             "with", *FAST], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def each_point_completed_once(db) -> list[dict]:
    runs = list(db["runs"].find({}, {"config": 1, "status": 1, "info.rounds": 1, "info.population": 1}))
    per_point = Counter(point_hash(run["config"]) for run in runs)
    assert len(per_point) == 4 and set(per_point.values()) == {1}, [(r["_id"], r["status"]) for r in runs]
    assert all(run["status"] == "COMPLETED" and [r["round"] for r in run["info"]["rounds"]] == [0, 1, 2, 3]
               for run in runs)
    return runs


@pytest.mark.parametrize("other", [["--population", "2"], []], ids=["two population sweeps", "beside single runs"])
def test_concurrent_sweeps_of_one_grid_complete_each_point_once(other, db_server, db_name, ticketlab_env, tmp_path):
    spec = f"{db_server.address}:{db_name}"
    first = sweep(spec, tmp_path / "a", ticketlab_env, "--population", "2")
    second = sweep(spec, tmp_path / "b", ticketlab_env, *other)
    outputs = [process.communicate(timeout=600)[0] for process in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    runs = each_point_completed_once(db_server.client()[db_name])
    assert any((run["info"].get("population") or {}).get("size") == 2 for run in runs)  # a population trained


def test_a_killed_population_is_resumed_by_the_next_sweep(db_server, db_name, ticketlab_env, tmp_path):
    spec = f"{db_server.address}:{db_name}"
    db = db_server.client()[db_name]
    killed = sweep(spec, tmp_path / "a", ticketlab_env, "--population", "4", "--stale-after", "12")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until every member has stored round 1
        rounds = [len(run["info"].get("rounds", [])) for run in db["runs"].find({}, {"info.rounds": 1})]
        if len(rounds) == 4 and min(rounds) >= 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the population did not reach round 1: {killed.communicate(timeout=60)[0]}")
    os.killpg(killed.pid, signal.SIGKILL)  # the sweep and its population process, as a lost machine would
    killed.wait(60)
    before = {run["_id"]: len(run["info"]["rounds"]) for run in db["runs"].find({}, {"info.rounds": 1})}
    assert all(r < 4 for r in before.values()), before  # it was killed mid-way: a fault, not a finished run
    time.sleep(13)  # past --stale-after: its claims and runs are dead
    again = sweep(spec, tmp_path / "b", ticketlab_env, "--population", "4", "--stale-after", "12")
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    runs = each_point_completed_once(db)
    assert {run["_id"] for run in runs} == set(before)  # resumed in their own documents
    for run_id, done in before.items():
        assert f"resumed run {run_id} after round {done - 1}" in out, out
