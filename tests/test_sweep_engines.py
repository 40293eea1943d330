"""The sweep on real engines: a Dask scheduler with two worker processes, a single-node Slurm, two sweeps of one
grid at once, a detached sweep reported by ``status``; every point COMPLETED exactly once, counted in the
database."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest

from analysis.conditions import condition_hash
from tests.conftest import run_cli
from tests.engines import SLURM_MISSING, DaskCluster, SlurmCluster

FAST = ["fast", "data.name=synthetic", "pruning.rounds=1"]


def sweep_args(db_server, db_name, tmp_path, criteria="large_final,random", seeds="1,2", *extra):
    """The sweep's arguments: ``extra`` flags go before ``with``."""
    return ["-m", f"{db_server.address}:{db_name}", "--criteria", criteria, "--seeds", seeds,
            "--logs", str(tmp_path / "logs"), *extra, "with", *FAST]


def completed_once(db, points: int) -> list[dict]:
    """Every point has exactly one run and it is COMPLETED with all its rounds."""
    runs = list(db["runs"].find({}, {"config": 1, "status": 1, "info.rounds": 1}))
    per_condition = Counter(condition_hash(r["config"]) for r in runs)
    assert len(per_condition) == points and set(per_condition.values()) == {1}, per_condition
    assert all(r["status"] == "COMPLETED" and [x["round"] for x in r["info"]["rounds"]] == [0, 1] for r in runs)
    return runs


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dask")
    env = dict(__import__("os").environ, TICKETLAB_DATA=str(folder / "data"), PYTHONWARNINGS="ignore",
               TICKETLAB_FAILURE_DIR=str(folder / "failed"))
    with DaskCluster(workers=2, env=env, log_dir=folder) as cluster:
        yield cluster


def test_dask_sweep_runs_the_grid_on_both_workers(dask_cluster, db_server, db_name, ticketlab_env, tmp_path):
    result = run_cli("experiments.sweep", *sweep_args(db_server, db_name, tmp_path, "large_final,random", "1,2",
                                                       "--executor", "dask", "--scheduler", dask_cluster.address),
                     env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    assert f"4 to run with Dask scheduler {dask_cluster.address}" in result.stdout
    assert "4 of 4 runs completed" in result.stdout
    db = db_server.client()[db_name]
    runs = completed_once(db, 4)
    assert all(r["config"]["training"]["threads"] == 1 for r in runs)
    holders = {c["pid"] for c in db["claims"].find()}
    assert holders == {w.pid for w in dask_cluster.workers}, "each worker process ran units"
    assert all(c["state"] == "COMPLETED" and c["rc"] == 0 for c in db["claims"].find())
    assert "8/8 [" in result.stderr and "running=" in result.stderr  # rounds of all runs (4 x 2), not runs


def test_two_sweeps_of_one_grid_at_once_run_each_point_once(db_server, db_name, ticketlab_env, tmp_path):
    args = sweep_args(db_server, db_name, tmp_path, "large_final,random,large_init", "1")
    command = [sys.executable, "-m", "experiments.sweep", *args]
    sweeps = [subprocess.Popen(command, env=ticketlab_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [s.communicate(timeout=300) for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    db = db_server.client()[db_name]
    completed_once(db, 3)
    assert db["claims"].count_documents({"state": "COMPLETED"}) == 3
    assert len({c["pid"] for c in db["claims"].find()}) >= 1


def test_detached_dask_sweep_is_reported_by_status(dask_cluster, db_server, db_name, ticketlab_env, tmp_path):
    spec = f"{db_server.address}:{db_name}"
    result = run_cli("experiments.sweep", *sweep_args(db_server, db_name, tmp_path, "large_final", "1,2", "--executor",
                                                       "dask", "--scheduler", dask_cluster.address, "--detach"),
                     env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    assert "2 units left running on dask" in result.stdout
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = run_cli("experiments.sweep", "status", "-m", spec, env=ticketlab_env)
        assert status.returncode == 0, status.stderr
        if "2 points: 2 completed; 4 of 4 rounds done" in status.stdout:
            break
        time.sleep(2)
    else:
        pytest.fail(status.stdout)
    completed_once(db_server.client()[db_name], 2)


@pytest.mark.skipif(bool(SLURM_MISSING), reason=f"Slurm is not installed (missing {', '.join(SLURM_MISSING)}; "
                                                "scripts/setup.sh installs slurm-wlm and munge as root)")
def test_slurm_sweep_runs_job_arrays(db_server, db_name, ticketlab_env, tmp_path):
    with SlurmCluster(tmp_path / "slurm") as slurm:
        env = dict(ticketlab_env, SLURM_CONF=slurm.env["SLURM_CONF"])
        result = run_cli("experiments.sweep", *sweep_args(db_server, db_name, tmp_path, "large_final", "1,2",
                                                           "--executor", "slurm", "--time", "10:00", "--mem", "1G"),
                         env=env)
        assert result.returncode == 0, result.stderr + result.stdout
        assert "2 of 2 runs completed" in result.stdout
    completed_once(db_server.client()[db_name], 2)
    slurm_logs = sorted(p.name for p in (tmp_path / "logs").glob("slurm-*_*.out"))
    assert len(slurm_logs) == 2 and slurm_logs[0].endswith("_0.out"), slurm_logs
    assert "completed" in (tmp_path / "logs" / slurm_logs[0]).read_text()


def test_bad_executor_flags_are_one_line_before_anything_runs(db_server, db_name, tmp_path, capsys):
    from experiments import sweep

    for extra, message in ((["--executor", "dask"], "--executor dask needs --scheduler tcp://HOST:PORT"),
                           (["--executor", "dask", "--scheduler", "127.0.0.1:1"], "is not tcp://HOST:PORT or local"),
                           (["--executor", "dask", "--scheduler", "local", "--detach"], "--detach needs a scheduler"),
                           (["--partition", "gpu"], "apply to --executor slurm, not local"),
                           (["--gpus", "7"], "--gpus '7' names no usable GPU"),
                           (["--stale-after", "5"], "must exceed Sacred's heartbeat")):
        with pytest.raises(SystemExit) as exit_:
            sweep.main(sweep_args(db_server, db_name, tmp_path, "large_final", "1", *extra))
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2 and message in error, (extra, error)
    assert db_server.client()[db_name]["runs"].count_documents({}) == 0
    assert not (tmp_path / "logs").exists()
