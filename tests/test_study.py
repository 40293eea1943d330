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


def test_a_port_another_home_holds_is_refused_in_one_line(tmp_path):
    """Two homes, one port: the second start used to report the first home's server as its own (its runs then went
    into the other database). Now one line, exit 1, and nothing written in the second home; the study says so too."""
    port = str(localdb.free_port())
    first, second = tmp_path / "first", tmp_path / "second"
    assert run_cli("experiments.localdb", "start", "--home", str(first), "--port", port).returncode == 0
    try:
        for module, args in (("experiments.localdb", ["start"]), ("experiments.study", [])):
            refused = run_cli(module, *args, "--home", str(second), "--port", port)
            lines = [line for line in refused.stderr.splitlines() if line.strip()]
            assert refused.returncode == 1 and refused.stdout == "", refused.stdout
            assert lines == [f"error: the run database did not start: port {port} on 127.0.0.1 is in use by another "
                             f"process (another run database, with its data elsewhere?): choose another with "
                             f"--port, or stop that one"], refused.stderr
            assert not second.exists()
    finally:
        run_cli("experiments.localdb", "stop", "--home", str(first))


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
