"""The sweep on real engines: a Dask scheduler with two worker processes, a single-node Slurm, two sweeps of one
grid at once, a detached sweep reported by ``status``; every point COMPLETED exactly once, counted in the
database."""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from collections import Counter

import pytest

from ticketlab.identity import point_hash
from experiments import claims
from tests.conftest import run_cli
from tests.engines import SLURM_MISSING, DaskCluster, SlurmCluster

FAST = ["fast", "data.name=synthetic", "pruning.rounds=1", "training.device=cpu"]  # CPU: resumed rounds bit-identical


def sweep_args(db_server, db_name, tmp_path, criteria="large_final,random", seeds="1,2", *extra):
    """The sweep's arguments: ``extra`` flags go before ``with``."""
    return ["-m", f"{db_server.address}:{db_name}", "--criteria", criteria, "--seeds", seeds,
            "--logs", str(tmp_path / "logs"), *extra, "with", *FAST]


def completed_once(db, points: int) -> list[dict]:
    """Every point has exactly one run and it is COMPLETED with all its rounds."""
    runs = list(db["runs"].find({}, {"config": 1, "status": 1, "info.rounds": 1}))
    per_condition = Counter(point_hash(r["config"]) for r in runs)
    assert len(per_condition) == points and set(per_condition.values()) == {1}, per_condition
    assert all(r["status"] == "COMPLETED" and [x["round"] for x in r["info"]["rounds"]] == [0, 1] for r in runs)
    return runs


def test_dask_sweep_detached_then_attached_on_two_workers(db_server, db_name, ticketlab_env, tmp_path):
    """A `dask scheduler` and two `dask worker` processes: a detached sweep of 2 points is reported by `status`
    as it finishes; the grid of 4 then runs the other 2, one per worker, with the bar counting rounds."""
    spec = f"{db_server.address}:{db_name}"
    env = dict(ticketlab_env, PYTHONWARNINGS="ignore")
    with DaskCluster(workers=2, env=env, log_dir=tmp_path) as cluster:
        dask = ("--executor", "dask", "--scheduler", cluster.address)
        detached = run_cli("experiments.sweep", *sweep_args(db_server, db_name, tmp_path, "large_final", "1,2",
                                                            *dask, "--detach"), env=ticketlab_env)
        assert detached.returncode == 0, detached.stderr
        assert "2 units left running on dask" in detached.stdout
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status = run_cli("experiments.sweep", "status", "-m", spec, env=ticketlab_env)
            assert status.returncode == 0, status.stderr
            if "2 points: 2 completed; 4 of 4 rounds done" in status.stdout:
                break
            time.sleep(1)
        else:
            pytest.fail(status.stdout)
        result = run_cli("experiments.sweep", *sweep_args(db_server, db_name, tmp_path, "large_final,random",
                                                          "1,2", *dask), env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    assert f"2 already completed, 2 to run with Dask scheduler {cluster.address}" in result.stdout
    assert "2 of 2 runs completed" in result.stdout
    # stderr is a pipe: plain lines, the last on closing (rounds of the runs, 2 x 2)
    assert result.stderr.splitlines()[-1].startswith("sweep: 4.0/4 rounds, 2/2 runs completed; running: -; elapsed ")
    db = db_server.client()[db_name]
    runs = completed_once(db, 4)
    assert all(r["config"]["training"]["threads"] == 1 for r in runs)
    assert all(c["state"] == "COMPLETED" and c["rc"] == 0 for c in db["claims"].find())
    assert {c["pid"] for c in db["claims"].find()} == {w.pid for w in cluster.workers}, "both workers ran units"


def test_two_sweeps_of_one_grid_at_once_run_each_point_once(db_server, db_name, ticketlab_env, tmp_path):
    args = sweep_args(db_server, db_name, tmp_path, "large_final,random,large_init", "1")
    command = [sys.executable, "-m", "experiments.sweep", *args]
    sweeps = [subprocess.Popen(command, env=ticketlab_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [s.communicate(timeout=300) for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], outputs
    db = db_server.client()[db_name]
    completed_once(db, 3)  # not only one COMPLETED: one run at all per point
    assert db["claims"].count_documents({"state": "COMPLETED"}) == 3


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
                           (["--executor", "dask", "--scheduler", "local", "--gpus", "7"],
                            "--gpus '7' names no usable GPU"),
                           (["--population", "2", "--gpus", "7"], "--gpus '7' names no usable GPU"),
                           (["--population", "2", "--executor", "slurm"], "--population runs on this machine"),
                           (["--population", "0"], "--population 0 must be at least 1"),
                           (["--stale-after", "5"], "must exceed Sacred's heartbeat")):
        with pytest.raises(SystemExit) as exit_:
            sweep.main(sweep_args(db_server, db_name, tmp_path, "large_final", "1", *extra))
        error = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_.value.code == 2 and message in error, (extra, error)
    assert db_server.client()[db_name]["runs"].count_documents({}) == 0
    assert not (tmp_path / "logs").exists()


def test_a_local_dask_cluster_gives_each_gpu_its_own_worker():
    """``--executor dask --scheduler local --gpus 2,5``: one worker per GPU, each seeing only its own
    (CUDA_VISIBLE_DEVICES, inherited by the run processes it starts, whose training.device=cuda is then that GPU),
    each running --runs-per-gpu units at a time. GPU ids are only names here: no GPU is needed to check this."""
    from experiments import executors, sweep

    assert executors.gpu_ids("2,5", 8) == [2, 5] and executors.gpu_ids("all", 2) == [0, 1]
    with pytest.raises(ValueError, match=r"^--gpus '3' names no usable GPU \(valid: 0..1 or all\)$"):
        executors.gpu_ids("3", 2)

    def probe():  # what a unit and the run process it starts see
        import os
        import subprocess
        import sys
        import time

        time.sleep(1.5)  # hold the slot, so that four units need both workers
        child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['CUDA_VISIBLE_DEVICES'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return os.environ["CUDA_VISIBLE_DEVICES"], child

    executor = executors.DaskExecutor("local", gpu_share=1 / 2, gpus=["2", "5"])  # --runs-per-gpu 2
    try:
        executor.client.wait_for_workers(2, timeout=60)
        workers = executor.client.scheduler_info()["workers"].values()
        assert sorted(w["resources"]["GPU"] for w in workers) == [1, 1] and {w["nthreads"] for w in workers} == {2}
        seen = executor.client.gather([executor.client.submit(probe, pure=False, resources=executor.resources)
                                       for _ in range(4)])
    finally:
        executor.close()
    assert sorted(seen) == [("2", "2"), ("2", "2"), ("5", "5"), ("5", "5")]


def wait_for_a_finished_round(db, process: subprocess.Popen, timeout: float = 240) -> dict:
    """The claim of a run that has finished round 0 and is still training (while the sweep runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for run in db["runs"].find({"status": "RUNNING"}, {"info": 1}):
            if len((run.get("info") or {}).get("rounds") or []) >= 1:  # stored on Sacred's 10 s heartbeat
                claim = db["claims"].find_one({"_id": run["info"]["point"]})
                if claim and claim.get("child_pid"):
                    return {**claim, "run_id": run["_id"]}
        time.sleep(0.3)
    raise AssertionError(f"no run finished a round while the sweep ran: {process.communicate()}")


def resumed_once(db, killed: dict, points: int, rounds: int) -> None:
    """The killed run went on in the same document; every point COMPLETED once with every round once."""
    runs = list(db["runs"].find({}, {"config": 1, "status": 1, "info.rounds": 1}))
    assert Counter(point_hash(r["config"]) for r in runs) == Counter({c: 1 for c in {point_hash(
        r["config"]) for r in runs}}) and len(runs) == points, [(r["_id"], r["status"]) for r in runs]
    assert all(r["status"] == "COMPLETED" for r in runs)
    assert all([x["round"] for x in r["info"]["rounds"]] == list(range(rounds)) for r in runs)
    claim = db["claims"].find_one({"_id": killed["_id"]})
    assert claim["run_id"] == killed["run_id"] and claim["attempts"] >= 2 and claim["token"] != killed["token"]


# 4 rounds of 3,000 steps: longer than Sacred's 10 s heartbeat, which stores the finished rounds
KILL_GRID = ["fast", "data.name=synthetic", "pruning.rounds=3", "training.iterations=3000", "training.eval_every=500"]


@pytest.mark.slow
def test_dask_worker_killed_mid_run_is_resumed(db_server, db_name, ticketlab_env, tmp_path):
    with DaskCluster(workers=2, env=ticketlab_env, log_dir=tmp_path) as cluster:
        command = [sys.executable, "-m", "experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--criteria",
                   "large_final,random", "--executor", "dask", "--scheduler", cluster.address, "--logs",
                   str(tmp_path / "logs"), "with", *KILL_GRID]
        sweep = subprocess.Popen(command, env=ticketlab_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db = db_server.client()[db_name]
        killed = wait_for_a_finished_round(db, sweep)
        worker = next(w for w in cluster.workers if w.pid == killed["pid"])
        cluster.kill_worker(worker)  # the worker and its run, as a lost machine
        out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err
    resumed_once(db, killed, points=2, rounds=4)
    text = "".join(p.read_text() for p in (tmp_path / "logs").glob("run_*.log"))
    assert f"resumed run {killed['run_id']} after round" in text, text[-3000:]
    assert f"resumed run {killed['run_id']} after round" in out, out


@pytest.mark.slow
@pytest.mark.skipif(bool(SLURM_MISSING), reason=f"Slurm is not installed (missing {', '.join(SLURM_MISSING)})")
def test_slurm_job_killed_mid_run_is_retried_and_resumed(db_server, db_name, ticketlab_env, tmp_path):
    with SlurmCluster(tmp_path / "slurm") as slurm:
        env = dict(ticketlab_env, SLURM_CONF=slurm.env["SLURM_CONF"])
        command = [sys.executable, "-m", "experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--criteria",
                   "large_final", "--executor", "slurm", "--logs", str(tmp_path / "logs"), "with", *KILL_GRID]
        sweep = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        db = db_server.client()[db_name]
        killed = wait_for_a_finished_round(db, sweep)
        subprocess.run(["scancel", killed["slurm_job"]], env=env, check=True)
        out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err
    assert "lost; retry 1 of 2 (it resumes from its last finished round)" in err
    resumed_once(db, killed, points=1, rounds=4)
    assert len(list((tmp_path / "logs").glob("slurm-*.out"))) == 2


def killed_runs(spec: str, db, env, cases: dict[int, tuple[int, list[str]]]) -> dict[int, dict]:
    """Real finished runs (in parallel), each turned into what a SIGKILL leaves: RUNNING, its last heartbeat 17 s
    ago, only its first ``rounds_listed`` round records in ``info.rounds`` (every round's artifact and metrics stored).
    ``cases``: seed -> (rounds_listed, extra updates). Returns each seed's run as it finished."""
    runs = {seed: subprocess.Popen([sys.executable, "-m", "experiments.lottery", "with", *FAST,
                                    "criterion.name=large_final", f"seed={seed}", *updates, "-m", spec],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for seed, (_, updates) in cases.items()}
    for process in runs.values():
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
    wholes = {}
    for seed, (listed, _) in cases.items():
        wholes[seed] = whole = db["runs"].find_one({"config.seed": seed})
        beat = claims.utcnow() - datetime.timedelta(seconds=17)
        db["runs"].update_one({"_id": whole["_id"]}, {"$set": {"status": "RUNNING", "heartbeat": beat,
                                                               "info.rounds": whole["info"]["rounds"][:listed]},
                                                      "$unset": {"stop_time": ""}})
    return wholes


def test_killed_runs_are_resumed_in_their_documents_and_the_sweep_says_so(db_server, db_name, ticketlab_env,
                                                                          tmp_path):
    """Issue 25's bad case and its neighbours, as a SIGKILL leaves them; 17 s later a sweep with --stale-after 15.
    Seed 1 died after round 0 (listed). Seed 2 died after it printed round 1 but before its round records reached
    ``info.rounds`` (they go in after the round's artifact and metrics; until store_now, only at Sacred's next
    heartbeat, up to 10 s later): round_00.pt and round_01.pt are stored, no round is listed. The sweep used to mark
    it INTERRUPTED and start a second run: two documents for the point. Seed 3 ran with save_artifacts=False: it
    cannot be resumed. Each point gets one line on the sweep's output saying what was decided."""
    spec = f"{db_server.address}:{db_name}"
    db = db_server.client()[db_name]
    wholes = killed_runs(spec, db, ticketlab_env, {1: (1, []), 2: (0, []), 3: (1, ["save_artifacts=False"])})
    ids = {seed: whole["_id"] for seed, whole in wholes.items()}
    assert {"round_00.pt", "round_01.pt"} <= {a["name"] for a in db["runs"].find_one({"_id": ids[2]})["artifacts"]}
    result = run_cli("experiments.sweep", "-m", spec, "--criteria", "large_final", "--seeds", "1,2,3",
                     "--stale-after", "15", "--logs", str(tmp_path / "logs"), "with", *FAST, env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    point = " ".join(FAST + ["criterion.name=large_final"])
    decisions = [line for line in result.stdout.splitlines() if line.startswith(f"sweep: {point}")]
    assert sorted(decisions) == [
        f"sweep: {point} seed=1: resumed run {ids[1]} after round 0",
        f"sweep: {point} seed=2: resumed run {ids[2]} at round 0 (no finished round stored)",
        f"sweep: {point} seed=3: started anew: run {ids[3]} ran with save_artifacts=False (its weights were not "
        "stored)"], result.stdout
    log = (tmp_path / "logs" / "run_0000.log").read_text()
    assert f"run {ids[1]} was RUNNING with no live process: marked INTERRUPTED" in log
    assert f"resumed run {ids[1]} after round 0" in log
    docs = list(db["runs"].find({}))
    assert sorted((d["config"]["seed"], d["status"]) for d in docs) == [(1, "COMPLETED"), (2, "COMPLETED"),
                                                                       (3, "COMPLETED"), (3, "INTERRUPTED")]
    for doc in docs:  # resumed in their own documents; every round recomputed bit-identically
        seed = doc["config"]["seed"]
        if doc["status"] == "COMPLETED":
            assert seed == 3 or doc["_id"] == ids[seed]
            assert [r["final_hash"] for r in doc["info"]["rounds"]] == \
                [r["final_hash"] for r in wholes[seed]["info"]["rounds"]]
