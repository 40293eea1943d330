"""The main job end to end at a tiny size: local database in the background, sweep, report; rerun reuses."""

from __future__ import annotations

import pytest

from experiments import datasets, localdb
from tests.conftest import run_cli


def test_localdb_start_status_stop_keeps_data(tmp_path):
    port = str(localdb.free_port())
    env_home = ["--home", str(tmp_path)]
    started = run_cli("experiments.localdb", "start", *env_home, "--port", port)
    assert started.returncode == 0 and f"127.0.0.1:{port}" in started.stdout, started.stderr
    try:
        with localdb.DatabaseServer(tmp_path / "db", int(port)).client() as client:
            client["keep"]["things"].insert_one({"_id": 1, "x": "survives"})
        assert run_cli("experiments.localdb", "status", *env_home).returncode == 0
        assert "stopped" in run_cli("experiments.localdb", "stop", *env_home).stdout
        assert run_cli("experiments.localdb", "status", *env_home).returncode == 3
        assert run_cli("experiments.localdb", "start", *env_home, "--port", port).returncode == 0
        with localdb.DatabaseServer(tmp_path / "db", int(port)).client() as client:
            assert client["keep"]["things"].find_one({"_id": 1})["x"] == "survives"
    finally:
        run_cli("experiments.localdb", "stop", *env_home)


@pytest.mark.skipif(not datasets.DEBIAN_FASHION_MNIST.is_dir(), reason="Fashion-MNIST not installed")
def test_study_runs_reports_and_reuses(tmp_path):
    args = ["--home", str(tmp_path), "--port", str(localdb.free_port()), "--criteria", "large_final,random",
            "--seeds", "1,2", "--rounds", "1", "--iterations", "60"]
    try:
        first = run_cli("experiments.study", *args)
        assert first.returncode == 0, first.stderr
        assert "4 to run" in first.stdout and "[criteria] large_final" in first.stdout
        assert (tmp_path / "study_report" / "study_criteria.png").stat().st_size > 20_000
        again = run_cli("experiments.study", *args)
        assert again.returncode == 0 and "4 already completed, 0 to run" in again.stdout
    finally:
        run_cli("experiments.localdb", "stop", "--home", str(tmp_path))
