"""``python -m experiments.study`` in a shared database (slow: real Fashion-MNIST, a local database
started in the background): it reports on its own runs when the database also holds runs of other settings (as
after the README's sweep example), and the commands it prints at the end work as printed."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.localdb import free_port
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")]


def test_study_reports_its_own_runs_and_prints_working_commands(tmp_path):
    home, port = tmp_path / "home", free_port()
    env = dict(os.environ, TICKETLAB_HOME=str(home), TICKETLAB_FAILURE_DIR=str(tmp_path / "failed"),
               OMP_NUM_THREADS="1")
    study = ["--home", str(home), "--port", str(port), "--criteria", "large_final,random", "--seeds", "1,2",
             "--rounds", "1", "--iterations", "60"]
    try:
        first = run_cli("experiments.study", *study, env=env, timeout=900)
        assert first.returncode == 0, first.stderr[-3000:]
        # a run of other settings in the same database (a sweep with more rounds and iterations), then again
        other = run_cli("experiments.lottery", "with", "reduced", "data.name=fashion_mnist", "criterion.name=random",
                        "pruning.rounds=1", "training.iterations=120", "seed=1", "-m", f"127.0.0.1:{port}:lottery",
                        env=env, timeout=600)
        assert other.returncode == 0, other.stderr[-3000:]
        again = run_cli("experiments.study", *study, env=env, timeout=900)
        assert again.returncode == 0, again.stderr[-3000:]
        report = (home / "study_report" / "report.md").read_text()
        assert "differ in more than" not in report and "4 completed lottery runs of 4" in report
        assert (home / "study_report" / "study_criteria.png").stat().st_size > 10_000
        # the printed commands, run as printed from the repository (no bare `python`)
        lines = again.stdout.split("browse and analyse the runs", 1)[1].splitlines()
        runs = next(line.strip() for line in lines if "-m analysis runs" in line)
        report_cmd = next(line.strip() for line in lines if "-m analysis report" in line)
        stop = next(line.split("stop the database: ", 1)[1] for line in lines if "stop the database" in line)
        assert not runs.startswith("python ") and shlex.split(runs)[0] in (os.path.relpath(sys.executable),
                                                                           sys.executable)
        listed = subprocess.run(runs, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0 and "large_final" in listed.stdout, listed.stderr
        out = home / "analysis_report"
        assert f"--out {out}" in report_cmd
        redone = subprocess.run(report_cmd, shell=True, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=300)
        assert redone.returncode == 0 and (out / "study_criteria.png").exists(), redone.stderr
        stopped = subprocess.run(stop, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
    finally:
        run_cli("experiments.localdb", "stop", "--home", str(home), env=env)
