"""``sweep --population auto`` (``experiments.population_size``): K from the device's memory and the measured step
time on a GPU; single runs on a CPU, said in one line."""

from __future__ import annotations

import pytest
import torch

from experiments import population_size

CUDA = torch.cuda.is_available()


def test_the_size_with_the_least_projected_wall_time_is_picked():
    # 55 runs: one population of 55 at 0.4 ms a step beats two of 32 at 0.3 ms and 55 single runs at 0.2 ms
    seconds = {1: 0.0002, 32: 0.0003, 55: 0.0004}
    assert population_size.pick(55, 1, seconds, most=1000) == 55
    assert population_size.pick(55, 1, seconds, most=40) == 32  # memory holds 40 members at most
    assert population_size.pick(55, 2, seconds, most=1000) == 32  # two populations of 32 side by side: 0.3 ms
    assert population_size.pick(55, 1, {1: 0.0002, 55: 0.02}, most=1000) == 1  # a step that grows with K
    assert population_size.pick(55, 1, {1: 0.0002, 55: 0.0002 * 55}, most=1000) == 1  # a tie: the smaller K
    assert population_size.pick(3, 1, {1: 1.0}, most=0) == 1


def test_auto_on_a_machine_without_a_gpu_runs_single_runs(db_server, db_name, ticketlab_env, tmp_path):
    from tests.conftest import run_cli

    if CUDA:
        pytest.skip("this machine has a GPU: the CUDA test below measures it")
    result = run_cli("experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--criteria", "large_final,random",
                     "--population", "auto", "--dry-run", "--logs", str(tmp_path / "logs"), "with", "fast",
                     "data.name=synthetic", env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("sweep: --population auto: no GPU here, so single runs (K=1): on a CPU a population "
                        "trains at about the speed of single runs")
    assert "2 to run" in result.stdout


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_population_is_one_line(value, db_server, db_name, ticketlab_env):
    from tests.conftest import run_cli

    result = run_cli("experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--population", value, "with",
                     "fast", env=ticketlab_env)
    assert result.returncode == 2
    line, = result.stderr.strip().splitlines()
    assert ("error: --population 0 must be at least 1; " if value == "0" else
            "error: argument --population: 'many' is not a number or auto; ") in line


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_auto_on_a_gpu_measures_memory_and_step_time():
    from experiments import lottery
    from experiments.sweep import resolve

    config = resolve(lottery.ex, ["fast", "data.name=synthetic"])
    lines = []
    k = population_size.choose(config, 6, None, 1, echo=lines.append)
    assert 1 <= k <= 6
    assert lines[0].startswith("sweep: --population auto on cuda:0 (") and f"K={k}: " in lines[0]
    assert "ms per step as CUDA graphs: K=1 " in lines[0] and "K=6 " in lines[0]
