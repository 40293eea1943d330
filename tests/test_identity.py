"""A result's identity (``ticketlab.identity``): one seed of one condition, made by one science version, whatever
path ran it. Each case runs the real command lines against the real database, where a user meets it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import analysis
from analysis.stats import ComparisonError
from tests.conftest import run_cli
from ticketlab import identity

ROOT = Path(__file__).resolve().parent.parent
FAST = ["fast", "data.name=synthetic", "training.device=cpu"]


# ------------------------------------------------------------------------------------------ the hashes themselves


def test_one_condition_hash_for_nested_flat_old_and_new_configs():
    nested = {"seed": 1, "arch": {"name": "lenet300_100"}, "training": {"lr": 0.1, "threads": 1, "dtype": "float32"}}
    before_dtype = {"seed": 1, "arch": {"name": "lenet300_100"}, "training": {"lr": 0.1, "threads": 4}}
    flat = {"seed": 2, "arch.name": "lenet300_100", "training.lr": 0.1, "training.dtype": "float32",
            "training.device": "cuda:0"}
    assert identity.condition_hash(nested) == identity.condition_hash(before_dtype) == identity.condition_hash(flat)
    assert identity.point_hash(nested) == identity.point_hash(before_dtype) != identity.point_hash(flat)
    assert identity.condition_hash({**nested, "training": {"lr": 0.2}}) != identity.condition_hash(nested)


def test_the_science_version_ignores_comments_docstrings_and_layout_only(tmp_path):
    base = 'def f(x):\n    """Doc."""\n    return x + 1  # one\n'
    same = ['def f(x):\n    """Other doc."""\n    return (x +\n            1)\n', '# a comment\n\n\n' + base]
    other = [base.replace("1", "2"), base.replace("x + 1", "1 + x"), base + "y = 0\n"]
    assert all(identity.normalized_source(s) == identity.normalized_source(base) for s in same)
    assert all(identity.normalized_source(s) != identity.normalized_source(base) for s in other)
    (tmp_path / "masking").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "datasets.py").write_text("LOAD = 1\n")
    (tmp_path / "masking" / "core.py").write_text(base)
    before = identity.science_version(tmp_path)
    identity.science_version.cache_clear()
    (tmp_path / "masking" / "core.py").write_text(same[0])
    assert identity.science_version(tmp_path) == before
    identity.science_version.cache_clear()
    (tmp_path / "experiments" / "datasets.py").write_text("LOAD = 2\n")
    assert identity.science_version(tmp_path) != before
    identity.science_version.cache_clear()


def test_the_science_version_is_the_same_under_another_python():
    """The GPU machines run Python 3.12: the same code must be the same science version there."""
    other = [f"/root/.pyenv/versions/{v}/bin/python{v[:4]}" for v in ("3.12.1", "3.13.0")]
    found = [p for p in other if os.path.exists(p)]
    if not found:
        pytest.skip("no other Python here")
    for python in found:
        out = subprocess.run([python, "-c", "from ticketlab import identity; print(identity.science_version())"],
                             cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert out.stdout.strip() == identity.science_version(), (python, out.stderr)


# ------------------------------------------------------------------------------------------ replicas and pairs


def _lottery(spec: str, env, *updates: str, check: bool = True) -> subprocess.CompletedProcess:
    result = run_cli("experiments.lottery", "with", *FAST, *updates, "-m", spec, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]
    return result


def _copy(db_server, source: str, target: str) -> None:
    client = db_server.client()
    client[target]["runs"].insert_many(list(client[source]["runs"].find()))


@pytest.fixture(scope="module")
def singles(db_server, tmp_path_factory):
    """large_final and random, seeds 1-3, single runs: the database a study's report is made from."""
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")))
    name = "identity_singles"
    sweep = run_cli("experiments.sweep", "-m", f"{db_server.address}:{name}", "--criteria", "large_final,random",
                    "--seeds", "1,2,3", "--workers", "2", "--logs", str(tmp_path_factory.mktemp("logs")), "with",
                    *FAST, env=env)
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    return name, env


def test_replicas_are_not_samples_and_an_extra_seed_does_not_unpair(singles, db_server, db_name, tmp_path):
    """The same points again, as a rerun with other threads, as population members and as a smoke run with Sacred's
    random seed: compare refuses the replicas in one line; the report counts each point once, says what it saw,
    and its tables equal those of the single runs alone."""
    source, env = singles
    _copy(db_server, source, db_name)
    spec = f"{db_server.address}:{db_name}"
    _lottery(spec, env, "criterion.name=large_final", "seed=1", "training.threads=2")  # a rerun: a replica
    members = run_cli("experiments.population", "-m", spec, "--members", "criterion.name=random,seed=2; seed=3",
                      "with", *FAST, env=env)
    assert members.returncode == 0, members.stderr[-2000:]
    _lottery(spec, env, "criterion.name=large_final", "seed=67238345")  # a seed random does not have

    df = analysis.load_runs(spec)
    with pytest.raises(ComparisonError) as refused:
        analysis.compare(df, factor="criterion", baseline="random")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("3 point(s) have replicas") and "--replicas first" in message
    assert re.search(r"criterion=large_final, mask1=original, mask0=zero, seed=1: runs \d+, 7[;)]", message), message

    reports = {}
    for name in (source, db_name):
        out = tmp_path / name
        result = run_cli("ticketlab", "report", "-m", f"{db_server.address}:{name}", "--out", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        reports[name] = (pd.read_csv(out / "compare_criteria.csv"), result.stdout)
    pd.testing.assert_frame_equal(reports[db_name][0], reports[source][0])
    assert set(reports[source][0]["test"]) == {"paired t"} and set(reports[source][0]["n"]) == {3}
    said = reports[db_name][1]
    assert "3 replica run(s) of 3 point(s) seen" in said and "each point counts once: its first run" in said
    assert "seed 67238345 (run" in said and "no random run of that seed" in said
    assert "replica run(s)" not in reports[source][1]


# ------------------------------------------------------------------------------------------ every path records alike


def _killed_after_round_1(spec: str, env, *updates: str) -> int:
    """A lottery run SIGKILLed right after it printed round 1; returns its id."""
    command = [sys.executable, "-m", "experiments.lottery", "with", *FAST, *updates, "-m", spec]
    run = subprocess.Popen(command, env=dict(env, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    seen = []
    for line in run.stdout:
        seen.append(line)
        if line.startswith("round  1:"):
            run.send_signal(signal.SIGKILL)
            break
    run.wait(60)
    assert run.returncode == -signal.SIGKILL, "".join(seen)
    started = next(line for line in seen if "Started run with ID" in line)
    return int(started.split('"')[1])


@pytest.mark.parametrize("source", ["init_best", "iter_final", "init_iter"])
def test_resume_works_for_every_criterion_source(source, db_server, db_name, ticketlab_env):
    updates = ["criterion.name=magnitude_increase", f"criterion.source={source}",
               "criterion.source_iteration=50", "pruning.rounds=3", "seed=2"]
    spec = f"{db_server.address}:{db_name}"
    run_id = _killed_after_round_1(spec, ticketlab_env, *updates)
    resumed = run_cli("experiments.lottery", "-m", spec, "--resume", str(run_id), env=ticketlab_env)
    assert resumed.returncode == 0 and f"resuming run {run_id} after round 1" in resumed.stdout, resumed.stderr
    _lottery(f"{db_server.address}:{db_name}_ref", ticketlab_env, *updates)
    client = db_server.client()
    got = client[db_name]["runs"].find_one({"_id": run_id})["info"]["rounds"]
    want = client[f"{db_name}_ref"]["runs"].find_one({})["info"]["rounds"]
    skip = {"train_seconds"}
    assert [{k: v for k, v in r.items() if k not in skip} for r in got] == \
        [{k: v for k, v in r.items() if k not in skip} for r in want]


def test_a_resumed_run_keeps_each_segments_execution(db_server, db_name, ticketlab_env):
    spec = f"{db_server.address}:{db_name}"
    run_id = _killed_after_round_1(spec, ticketlab_env, "pruning.rounds=3", "training.threads=1")
    resumed = run_cli("experiments.lottery", "-m", spec, "--resume", str(run_id), "with", "training.threads=2",
                      env=ticketlab_env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    info = db_server.client()[db_name]["runs"].find_one({"_id": run_id})["info"]
    segments = info["segments"]
    assert [s["after_round"] for s in segments] == [None, 1]
    assert [s["execution"]["threads"] for s in segments] == [1, 2] and info["execution"]["threads"] == 2
    assert all(s["science"]["version"] == identity.science_version() for s in segments)
    assert info["science"]["version"] == identity.science_version()
    config = db_server.client()[db_name]["runs"].find_one({"_id": run_id})["config"]
    assert (info["condition"], info["point"]) == (identity.condition_hash(config), identity.point_hash(config))


def test_a_diverging_single_run_fails_in_one_line_as_a_member_does(db_server, db_name, ticketlab_env):
    """The rule of the one training loop (a population member failing alone: tests/test_population.py)."""
    spec = f"{db_server.address}:{db_name}"
    single = _lottery(spec, ticketlab_env, "training.lr=1e30", check=False)
    assert single.returncode != 0
    reason = [line for line in single.stderr.splitlines() if "FAILED" in line]
    assert reason == ["experiments.errors.RunFailed: run 1 FAILED in round 0: non-finite loss at iteration 25 "
                      "(train nan, validation nan)"], single.stderr[-2000:]
    doc = db_server.client()[db_name]["runs"].find_one({"_id": 1})
    assert doc["status"] == "FAILED" and doc["info"]["rounds"] == []


# ------------------------------------------------------------------------------------------ Supermask starts


def test_a_supermask_starts_only_from_a_finished_lottery_mask_of_its_arch_and_data(db_server, db_name,
                                                                                    ticketlab_env):
    spec = f"{db_server.address}:{db_name}"
    runs = db_server.client()[db_name]["runs"]
    _lottery(spec, ticketlab_env, "seed=1")  # run 1: COMPLETED, synthetic
    diverged = _lottery(spec, ticketlab_env, "training.lr=1e30", check=False)  # run 2: FAILED
    assert diverged.returncode != 0
    _lottery(spec, ticketlab_env, "seed=1", "data.synthetic_shape=cifar", "arch.name=conv2",  # run 3: conv2, small
             "training.iterations=10", "training.eval_every=10", "data.synthetic_train=500", "data.synthetic_test=100",
             "data.val_size=100", "pruning.rounds=1")
    start = ["supermask.start=run", "supermask.start_round=1"]
    for run_id, why in ((2, "run 2 is FAILED, not COMPLETED"), (3, "run 3 pruned arch.name='conv2', this run has "
                                                                   "arch.name='lenet300_100'"),
                        (9, "no such run"), (1, "run 1 has no round 7")):
            updates = [*start, f"supermask.start_run={run_id}"] + (["supermask.start_round=7"] if run_id == 1 else [])
            refused = run_cli("experiments.supermask", "with", *FAST, *updates, "-m", spec, env=ticketlab_env)
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert refused.returncode != 0 and len(lines) == 1 and why in lines[0], refused.stderr
    assert runs.count_documents({}) == 3  # nothing written by the refusals
    started = run_cli("experiments.supermask", "with", *FAST, *start, "supermask.start_run=1", "supermask.sign_draws=0",
                      "-m", spec, env=ticketlab_env)
    assert started.returncode == 0, started.stderr[-2000:]
    source, doc = runs.find_one({"_id": 1}), runs.find_one({"_id": 4})
    recorded = doc["info"]["start_mask"]
    assert recorded == {"run": 1, "condition": identity.condition_hash(source["config"]),
                        "point": identity.point_hash(source["config"]), "science": identity.science_version(),
                        "round": 1, "percent_remaining": source["info"]["rounds"][1]["percent_remaining"],
                        "mask_hash": source["info"]["rounds"][1]["mask_hash"]}


# ------------------------------------------------------------------------------------------ a change of the code


def test_a_change_of_the_science_code_is_seen_by_the_sweep_and_the_report(db_server, db_name, ticketlab_env,
                                                                          tmp_path):
    """A sweep finished, then a fix in masking/: the same sweep from the fixed code trains every point again
    (saying why), the report compares the two versions apart, and --keep-other-versions counts the old runs."""
    import shutil

    spec = f"{db_server.address}:{db_name}"
    grid = ["-m", spec, "--criteria", "large_final,random", "--seeds", "1,2", "--workers", "2", "with", *FAST]

    def sweep(code: Path, *extra: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "experiments.sweep", "--logs", str(tmp_path / "logs"),
                                 *extra, *grid], cwd=code, env=dict(ticketlab_env, PYTHONPATH=str(code)),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        return result

    before = identity.science_version()
    assert "4 to run" in sweep(ROOT).stdout
    fixed = tmp_path / "fixed"
    for name in ("masking", "experiments", "analysis", "ticketlab"):
        shutil.copytree(ROOT / name, fixed / name, ignore=shutil.ignore_patterns("__pycache__"))
    init = fixed / "masking" / "__init__.py"
    init.write_text(init.read_text() + "\nFIXED = True  # a change Python sees: another science version\n")
    after = identity.science_version(fixed)
    assert after != before
    again = sweep(fixed)
    assert f"sweep: 4 point(s) were completed only by other science versions ({before}: 4 run(s)): run again with " \
           f"this code's science version {after}" in again.stdout, again.stdout
    assert "4 runs in the grid, 0 already completed, 4 to run" in again.stdout
    runs = list(db_server.client()[db_name]["runs"].find({}, {"status": 1, "info.science": 1}))
    assert sorted(r["info"]["science"]["version"] for r in runs) == sorted([before] * 4 + [after] * 4)
    assert "4 runs in the grid, 4 already completed, 0 to run" in sweep(fixed, "--keep-other-versions").stdout

    df = analysis.load_runs(spec)
    with pytest.raises(ComparisonError, match=f"differ in more than 'criterion' \\(science: {min(before, after)}, "
                                              f"{max(before, after)}\\)"):
        analysis.compare(df, factor="criterion", baseline="random")
    out = tmp_path / "report"
    report = run_cli("ticketlab", "report", "-m", spec, "--out", str(out), env=ticketlab_env)
    assert report.returncode == 0, report.stderr[-2000:]
    for version in (before, after):
        assert (out / f"science={version}" / "compare_criteria.csv").is_file(), sorted(p.name for p in out.iterdir())
