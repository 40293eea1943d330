"""docs/extending.md's worked examples, run end to end: each writes the example's modules, exactly as the document
shows them, to a temporary folder outside the package, names them in ``$TICKETLAB_PLUGINS`` and runs the commands
a user runs (a criterion, a data set, an architecture family, an experiment kind and a record field of it, an
executor)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
TINY = ("data.synthetic_train=600", "data.synthetic_test=200", "data.val_size=100")


def examples() -> dict[str, str]:
    """The document's modules: each ``python`` block whose first line is ``# NAME.py``, by NAME."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    return {m.group(1): block for block in blocks if (m := re.match(r"# (\w+)\.py\n", block))}


def plugin_env(env: dict, folder: Path, modules: dict[str, str], plugins: str) -> dict:
    """``modules`` written to ``folder`` (outside the package), importable, ``plugins`` named in the variable."""
    folder.mkdir(exist_ok=True)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    path = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    return dict(env, PYTHONPATH=path, TICKETLAB_PLUGINS=plugins)


def lottery(env, *updates: str):
    return run_cli("experiments.lottery", "with", "fast", "pruning.rounds=1", "training.iterations=40",
                   "training.eval_every=20", *TINY, *updates, env=env)


def round_lines(result) -> list[str]:
    assert result.returncode == 0, result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if re.match(r"round +\d+:", line)]


def test_a_criterion_from_a_plugin_prunes_a_lottery_run(ticketlab_env, tmp_path):
    env = plugin_env(ticketlab_env, tmp_path / "plugins", {"toy_criteria": examples()["toy_criteria"]}, "toy_criteria")
    lines = round_lines(lottery(env, "data.name=synthetic", "criterion.name=smallest_change"))
    assert [line.split(":")[1].split("%")[0].strip() for line in lines] == ["100.00", "80.04"]
    refused = lottery(env, "data.name=synthetic", "criterion.name=no_such")  # the plugin's name among the choices
    assert refused.returncode != 0 and "smallest_change" in refused.stderr and "no_such" in refused.stderr


def test_a_data_set_from_a_plugin_trains_a_lottery_run(ticketlab_env, tmp_path):
    env = plugin_env(ticketlab_env, tmp_path / "plugins", {"toy_data": examples()["toy_data"]}, "toy_data")
    lines = round_lines(lottery(env, "data.name=stripes"))
    assert len(lines) == 2
    assert float(re.search(r"test acc ([\d.]+)", lines[0]).group(1)) > 0.6  # two classes, learnable


def test_an_architecture_family_from_a_plugin_with_its_paper_config(ticketlab_env, tmp_path):
    env = plugin_env(ticketlab_env, tmp_path / "plugins", {"toy_family": examples()["toy_family"]}, "toy_family")
    shown = run_cli("experiments.lottery", "print_config", "with", "paper_wide64", env=env)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"name = 'wide64'", shown.stdout) and re.search(r"iterations = 1000\b", shown.stdout)
    result = run_cli("experiments.lottery", "with", "paper_wide64", "data.name=synthetic", "training.iterations=40",
                     "training.eval_every=20", "pruning.rounds=1", *TINY, env=env)
    lines = round_lines(result)
    assert len(lines) == 2 and "80.13% left" in lines[1]  # 784x64 fc at 0.2, 64x10 output at 0.1


def noise_env(ticketlab_env, tmp_path, with_std: bool = False) -> dict:
    modules = {name: examples()[name] for name in ("toy_kinds", "toy_noise")}
    if with_std:  # the record-field example: one field, and the line that computes it
        block = re.search(r"# toy_kinds.py, the record with one more field\n(.*?)```", DOC.read_text(), re.S).group(1)
        record = re.search(r"@dataclasses.dataclass\nclass NoiseRecord:.*?\n\n\n", modules["toy_kinds"], re.S).group(0)
        modules["toy_kinds"] = modules["toy_kinds"].replace(record, block + "\n\n")
        modules["toy_noise"] = modules["toy_noise"].replace("draws=draws)", "draws=draws, std=float(sample.std()))")
        assert "std: float" in modules["toy_kinds"] and "sample.std()" in modules["toy_noise"]
    return plugin_env(ticketlab_env, tmp_path / "plugins", modules, "toy_kinds")


def test_an_experiment_kind_from_a_plugin_is_swept_listed_and_reported(db_server, db_name, ticketlab_env, tmp_path):
    env = noise_env(ticketlab_env, tmp_path)
    spec = f"{db_server.address}:{db_name}"
    swept = run_cli("ticketlab", "sweep", "-m", spec, "--experiment", "noise", "--seeds", "1,2,3",
                    "--logs", str(tmp_path / "logs"), "with", "draws=50", env=env)
    assert swept.returncode == 0, swept.stderr[-3000:]
    assert "3 runs in the grid, 0 already completed, 3 to run" in swept.stdout
    assert "3 of 3 runs completed" in swept.stdout
    listed = run_cli("ticketlab", "runs", "-m", spec, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "noise runs (3):" in listed.stdout and "COMPLETED" in listed.stdout and "mean" in listed.stdout
    runs = list(db_server.client()[db_name]["runs"].find({}, {"experiment.name": 1, "info.mean": 1, "config": 1}))
    assert sorted(r["config"]["seed"] for r in runs) == [1, 2, 3] and {r["experiment"]["name"] for r in runs} == {
        "noise"}
    means = {r["config"]["seed"]: r["info"]["mean"] for r in runs}
    assert means == pytest.approx({s: float(torch.randn(50, generator=torch.Generator().manual_seed(s)).mean())
                                   for s in (1, 2, 3)})
    again = run_cli("ticketlab", "sweep", "-m", spec, "--experiment", "noise", "--seeds", "1,2,3",
                    "--logs", str(tmp_path / "logs"), "with", "draws=50", env=env)
    assert again.returncode == 0 and "nothing to run" in again.stdout  # the claims find the kind's runs
    report = run_cli("ticketlab", "report", "-m", spec, "--out", str(tmp_path / "report"), "--experiment", "noise",
                     env=env)
    assert report.returncode == 0, report.stderr
    assert "[noise]" in report.stdout and "over 3 seed(s)" in report.stdout
    assert "# Noise: mean (mean), mean over seeds" in (tmp_path / "report" / "noise_summary.md").read_text()


def test_a_record_field_is_one_field_of_the_kinds_record(db_server, db_name, ticketlab_env, tmp_path):
    env = noise_env(ticketlab_env, tmp_path, with_std=True)
    spec = f"{db_server.address}:{db_name}"
    run = run_cli("toy_noise", "with", "draws=40", "seed=5", "-m", spec, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    code = (f"from analysis.query import load_kind; f = load_kind('noise', {spec!r}); "
            "print(list(f.columns)[-2:], round(float(f['std'].iloc[0]), 6))")
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr
    std = float(torch.randn(40, generator=torch.Generator().manual_seed(5)).std())
    assert shown.stdout.strip() == f"['mean', 'std'] {round(std, 6)}"  # draws: also a config column


def test_an_executor_from_a_plugin_declares_its_flags_and_runs_a_sweep(db_server, db_name, ticketlab_env, tmp_path):
    env = plugin_env(ticketlab_env, tmp_path / "plugins", {"toy_executor": examples()["toy_executor"]},
                     "toy_executor")
    spec = f"{db_server.address}:{db_name}"
    sweep = ("sweep", "-m", spec, "--criteria", "large_final,random", "--logs", str(tmp_path / "logs"))
    with_ = ("with", "fast", "pruning.rounds=1", "training.iterations=40", "training.eval_every=20", *TINY,
             "data.name=synthetic")
    helped = run_cli("ticketlab", "sweep", "--help", env=env)
    assert "--executor serial" in helped.stdout and "--serial-log" in helped.stdout
    refused = run_cli("ticketlab", *sweep, "--serial-log", str(tmp_path / "x.txt"), *with_, env=env)
    assert refused.returncode == 2 and "--serial-log applies to --executor serial, not local" in refused.stderr
    missing = run_cli("ticketlab", *sweep, "--executor", "serial", *with_, env=env)
    assert missing.returncode == 2 and "--executor serial needs --serial-log FILE" in missing.stderr
    done = tmp_path / "done.txt"
    result = run_cli("ticketlab", *sweep, "--executor", "serial", "--serial-log", str(done), *with_, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"2 to run with one run at a time, listed in {done}" in result.stdout
    assert "2 of 2 runs completed" in result.stdout
    assert [line.split(" seed=")[0].split()[-1] for line in done.read_text().splitlines()] == [
        "criterion.name=large_final", "criterion.name=random"]
    assert all(line.endswith(": completed") for line in done.read_text().splitlines())
    runs = list(db_server.client()[db_name]["runs"].find({}, {"status": 1, "info.rounds": 1}))
    assert len(runs) == 2 and all(r["status"] == "COMPLETED" and len(r["info"]["rounds"]) == 2 for r in runs)
