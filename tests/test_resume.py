"""Resume and interrupts through the real command line and a real database server: a run killed with SIGKILL
continues from its last finished round into the same document; SIGTERM and Ctrl-C leave a run INTERRUPTED."""

from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from experiments import resume
from ticketlab import identity
from tests.conftest import ctrl_c_interrupts, run_cli

# threads and device pinned: results are bit-identical run to run only at a fixed thread count, on the CPU
RUN = ["with", "fast", "data.name=synthetic", "training.threads=1", "training.device=cpu", "training.iterations=300",
       "pruning.rounds=3", "seed=7"]
BEAT = ["-b", "0.1"]  # heartbeats every 0.1 s, so the database follows each round closely


def start(spec, env, *args):
    return subprocess.Popen([sys.executable, "-m", "experiments.lottery", "-m", spec, *BEAT, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=ctrl_c_interrupts)


def wait_for(runs, condition, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        doc = runs.find_one({})
        if doc is not None and condition(doc):
            return doc
        if process.poll() is not None:
            pytest.fail("the run ended before the condition held:\n" + process.stdout.read())
        time.sleep(0.02)
    pytest.fail("timed out")


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(30)


def metrics_of(db, run_id):
    return {m["name"]: (m["steps"], m["values"]) for m in db["metrics"].find({"run_id": run_id})}


@pytest.fixture(scope="module")
def reference(db_server, tmp_path_factory):
    """An uninterrupted run of the same condition: its document and metrics."""
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")), PYTHONWARNINGS="ignore")
    result = run_cli("experiments.lottery", *RUN, "-m", f"{db_server.address}:resume_reference", env=env)
    assert result.returncode == 0, result.stderr
    db = db_server.client()["resume_reference"]
    doc = db["runs"].find_one({"_id": 1})
    return doc, metrics_of(db, 1)


def test_killed_run_resumes_into_one_completed_document(db_server, db_name, ticketlab_env, reference):
    expected, expected_metrics = reference
    spec = f"{db_server.address}:{db_name}"
    db = db_server.client()[db_name]
    process = start(spec, ticketlab_env, *RUN)
    try:
        wait_for(db["runs"], lambda doc: len(doc.get("info", {}).get("rounds", [])) >= 2, process)
        process.send_signal(signal.SIGKILL)  # round 1 finished, round 2 under way: nothing gets to clean up
    finally:
        stop(process)
    killed = db["runs"].find_one({"_id": 1})
    finished = len(killed["info"]["rounds"])
    assert killed["status"] == "RUNNING" and finished in (2, 3)  # 3: the poll saw round 2 land as well

    command = resume.resume_command(1, spec, ["training.threads=1"])
    started = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    resumed = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ticketlab_env,
                               stdin=subprocess.DEVNULL)
    try:
        # its first write (long before Sacred's first heartbeat) shows it alive: no sweep takes it for dead
        first = wait_for(db["runs"], lambda doc: doc.get("heartbeat") != killed["heartbeat"], resumed)
        assert first["heartbeat"] is not None and first["heartbeat"] >= started - datetime.timedelta(seconds=1)
        assert not resume.is_stale(first, 15)
        stdout, stderr = resumed.communicate(timeout=300)
    finally:
        stop(resumed)
    result = subprocess.CompletedProcess(command, resumed.returncode, stdout, stderr)
    assert result.returncode == 0, result.stderr
    # it continues after the last round whose record, artifact and metrics were all stored (normally finished - 1)
    after = int(re.search(r"resuming run 1 after round (\d+)", result.stdout).group(1))
    assert 0 <= after <= finished - 1

    assert db["runs"].count_documents({}) == 1
    run = db["runs"].find_one({"_id": 1})
    assert run["status"] == "COMPLETED"
    fields = ("round", "init_hash", "start_hash", "final_hash", "mask_hash", "test_acc", "untrained_test_acc",
              "early_stop_iteration", "final_test_acc", "val_loss")
    assert [[r[f] for f in fields] for r in run["info"]["rounds"]] == \
        [[r[f] for f in fields] for r in expected["info"]["rounds"]]
    assert [a["name"] for a in run["artifacts"]] == [a["name"] for a in expected["artifacts"]]
    stored = [f["filename"] for f in db["fs.files"].find({}, {"filename": 1}) if f["filename"].startswith("artifact:")]
    assert len(stored) == len(expected["artifacts"]), f"orphaned artifact files: {sorted(stored)}"
    # every metric series has exactly the uninterrupted run's steps and values: nothing lost, nothing twice
    assert metrics_of(db, 1) == expected_metrics
    assert {m["name"] for m in run["info"]["metrics"]} == set(expected_metrics)
    assert run["start_time"] == killed["start_time"] and run["info"]["resumed"][0]["after_round"] == after
    # the output captured before the kill stays (up to the killed process's last heartbeat), then the resumed run's
    assert run["captured_out"].startswith("round  0:") and "resuming run 1 after round" in run["captured_out"]
    assert run["captured_out"].rstrip().splitlines()[-1].startswith("round  3:")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_interrupt_marks_the_run_interrupted(db_server, db_name, ticketlab_env, sig):
    spec = f"{db_server.address}:{db_name}"
    db = db_server.client()[db_name]
    process = start(spec, ticketlab_env, *RUN)
    try:
        wait_for(db["runs"], lambda doc: doc.get("info", {}).get("rounds"), process)
        process.send_signal(sig)
        output = process.communicate(timeout=60)[0]
    finally:
        stop(process)
    assert process.returncode == 130, output
    run = db["runs"].find_one({"_id": 1})
    assert run["status"] == "INTERRUPTED" and run.get("stop_time") is not None
    assert f"ticketlab: run 1 INTERRUPTED; continue it with: python -m experiments.lottery -m {spec} --resume 1" \
        in output
    assert "Traceback" not in output


def test_ticketlab_resume_continues_a_run_with_the_experiment_that_made_it(db_server, db_name, ticketlab_env,
                                                                           reference):
    """``ticketlab resume -m DB RUN_ID``: an interrupted lottery run continues as ``--resume`` does, to the
    uninterrupted run's rounds; a run of an experiment that does not resume is refused in one line."""
    spec = f"{db_server.address}:{db_name}"
    db = db_server.client()[db_name]
    process = start(spec, ticketlab_env, *RUN)
    try:
        wait_for(db["runs"], lambda doc: doc.get("info", {}).get("rounds"), process)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    finally:
        stop(process)
    assert db["runs"].find_one({"_id": 1})["status"] == "INTERRUPTED"
    result = run_cli("ticketlab", "resume", "-m", spec, "1", "with", "training.threads=1", env=ticketlab_env)
    assert result.returncode == 0 and "resuming run 1 after round" in result.stdout, result.stderr
    run, expected = db["runs"].find_one({"_id": 1}), reference[0]
    assert run["status"] == "COMPLETED" and db["runs"].count_documents({}) == 1
    assert [r["final_hash"] for r in run["info"]["rounds"]] == [r["final_hash"] for r in expected["info"]["rounds"]]
    supermask = run_cli("experiments.supermask", "with", "fast", "data.name=synthetic", "training.iterations=20",
                        "supermask.sign_draws=0", "-m", spec, env=ticketlab_env)
    assert supermask.returncode == 0, supermask.stderr
    refused = run_cli("ticketlab", "resume", "-m", spec, "2", env=ticketlab_env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and \
        "run 2 is a supermask run: supermask runs are not resumed" in refused.stderr, refused.stderr


def test_resume_refusals_are_one_line_and_write_nothing(db_server, ticketlab_env, reference):
    spec = f"{db_server.address}:resume_reference"
    db = db_server.client()["resume_reference"]
    before = db["runs"].find_one({"_id": 1})
    for args, message in [
        (["--resume", "1"], "run 1 is already COMPLETED"),
        (["--resume", "2"], "run 2 not found in -m"),
    ]:
        result = run_cli("experiments.lottery", "-m", spec, *args, env=ticketlab_env)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert db["runs"].find_one({"_id": 1}) == before and db["runs"].count_documents({}) == 1


def test_resume_needs_stored_weights():
    doc = {"_id": 4, "experiment": {"name": "lottery"}, "status": "FAILED", "config": {"save_artifacts": False}}
    with pytest.raises(resume.ResumeError, match="run 4 cannot be resumed: it ran with save_artifacts=False"):
        resume.prepare("lottery", doc, {}, [])
    with pytest.raises(resume.ResumeError, match="run 4 is a lottery run, not a supermask run"):
        resume.prepare("supermask", doc, {}, [])
    with pytest.raises(resume.ResumeError, match=r"only execution settings \(data.root, .*training.threads\) may be "
                                                 r"given, not criterion.name, seed"):
        resume.prepare("lottery", doc, {"training": {"threads": 1}, "criterion": {"name": "random"}, "seed": 3}, [])
    with pytest.raises(resume.ResumeError, match="named configs \\(fast\\) cannot be added"):
        resume.prepare("lottery", {**doc, "config": {"save_artifacts": True}}, {}, ["fast"])
    current = {"version": identity.science_version()}
    config, info = resume.prepare("lottery", {**doc, "config": {"save_artifacts": True, "training": {"threads": 0}},
                                              "info": {"rounds": [1], "science": current}},
                                  {"training": {"threads": 2}}, [])
    assert config == {"save_artifacts": True, "training": {"threads": 2}} and info["rounds"] == [1]
    # another science version (or a run from before versions were recorded): refused unless told
    for science in ({"version": "0123456789ab"}, None):
        other = {**doc, "config": {"save_artifacts": True}, "info": {"rounds": [1], "science": science}}
        stored = science["version"] if science else "unknown"
        with pytest.raises(resume.ResumeError, match=f"run 4 was started by science version {stored}, this code is "
                                                     f"{current['version']} .*add --other-science"):
            resume.prepare("lottery", other, {}, [])
        assert resume.prepare("lottery", other, {}, [], other_science=True)[1]["rounds"] == [1]


def test_is_stale_and_resume_command():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    beat = now - datetime.timedelta(seconds=90)
    assert resume.is_stale({"status": "RUNNING", "heartbeat": beat}, 60, now=now)
    assert not resume.is_stale({"status": "RUNNING", "heartbeat": beat}, 120, now=now)
    assert not resume.is_stale({"status": "COMPLETED", "heartbeat": beat}, 60, now=now)
    assert resume.is_stale({"status": "RUNNING", "heartbeat": None, "start_time": beat}, 60,
                           now=now.replace(tzinfo=datetime.timezone.utc))
    assert resume.resume_command(7, "127.0.0.1:1234:db") == \
        [sys.executable, "-m", "experiments.lottery", "-m", "127.0.0.1:1234:db", "--resume", "7"]
