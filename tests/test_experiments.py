"""The experiments through the real command line, logged to a real database server, read back with pymongo and
incense."""

from __future__ import annotations

import subprocess
import sys

import incense
import pytest
import torch

from masking import hashing, models, pruning
from experiments.localdb import DatabaseServer
from tests.conftest import run_cli

FAST = ["fast", "data.name=synthetic", "training.device=cpu"]  # CPU numbers: runs of a seed repeat bit for bit
ROUND_KEYS = {"round", "percent_remaining", "init_hash", "start_hash", "final_hash", "mask_hash", "val_acc",
              "test_acc", "early_stop_iteration", "final_test_acc", "untrained_test_acc"}


def lottery(db_server, db_name, env, *updates):
    result = run_cli("experiments.lottery", "with", *FAST, *updates, "-m", f"{db_server.address}:{db_name}", env=env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def lottery_db(db_server, tmp_path_factory):
    """Four fast lottery runs: two criteria at seed 1, seed 1 repeated, and seed 2."""
    import os
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")))
    name = "lottery_cli"
    for updates in (["criterion.name=large_final", "seed=1"], ["criterion.name=random", "seed=1"],
                    ["criterion.name=large_final", "seed=1"], ["criterion.name=large_final", "seed=2"]):
        lottery(db_server, name, env, *updates)
    runs = list(db_server.client()[name]["runs"].find(sort=[("_id", 1)]))
    return name, runs


def test_lottery_record_fields(lottery_db):
    _, runs = lottery_db
    assert [r["status"] for r in runs] == ["COMPLETED"] * 4
    net = models.build("lenet300_100", kind="masked")
    sizes = {n: layer.weight.numel() for n, layer in net.prunable_layers().items()}
    expected = pruning.schedule(sizes, pruning.layer_rates(net.layer_roles(), net.arch.rates), 2)
    for run in runs:
        assert run["config"]["arch"]["name"] == "lenet300_100"
        assert run["config"]["training"]["lr"] == pytest.approx(1.2e-3)  # resolved from the arch
        rounds = run["info"]["rounds"]
        assert [r["round"] for r in rounds] == [0, 1, 2]
        for record in rounds:
            assert ROUND_KEYS <= set(record)
            for key in ("val_acc", "test_acc", "final_test_acc", "untrained_test_acc"):
                assert 0.0 <= record[key] <= 1.0
            assert 0 < record["early_stop_iteration"] <= 100
        assert [r["percent_remaining"] for r in rounds] == pytest.approx(expected)
        assert rounds[0]["percent_remaining"] == 100.0
        assert rounds[0]["test_acc"] > 0.3, "fast synthetic training learns"
        assert len(run["captured_out"]) < 2000 and "round  0" in run["captured_out"]


def test_runs_pair_across_conditions_and_repeat_exactly(lottery_db):
    _, (large1, random1, repeat1, large2) = lottery_db
    init = {r["info"]["rounds"][0]["init_hash"] for r in (large1, random1, repeat1)}
    assert len(init) == 1 and large2["info"]["rounds"][0]["init_hash"] not in init
    # round 0 does not depend on the criterion; later rounds do
    assert large1["info"]["rounds"][0]["final_hash"] == random1["info"]["rounds"][0]["final_hash"]
    assert large1["info"]["rounds"][1]["mask_hash"] != random1["info"]["rounds"][1]["mask_hash"]
    # the same config and seed again: bit-identical in every round
    for a, b in zip(large1["info"]["rounds"], repeat1["info"]["rounds"]):
        assert (a["final_hash"], a["mask_hash"], a["test_acc"]) == (b["final_hash"], b["mask_hash"], b["test_acc"])
    assert large1["info"]["point"] == repeat1["info"]["point"] != large2["info"]["point"]


def test_incense_reads_metrics_and_artifacts(db_server, lottery_db):
    name, runs = lottery_db
    loader = incense.ExperimentLoader(mongo_uri=f"mongodb://{db_server.address}", db_name=name)
    exp = loader.find_by_id(runs[0]["_id"])
    assert exp.status == "COMPLETED"
    assert set(exp.artifacts) == {"init.pt", "round_00.pt", "round_01.pt", "round_02.pt"}
    val_acc = exp.metrics["val_acc"]
    assert len(val_acc) == 3 * 4 and list(val_acc.index[:4]) == [25, 50, 75, 100]
    assert list(exp.metrics["round.test_acc"].index) == [100, 200, 300]  # each round's last step
    saved = torch.load(_artifact_file(exp.artifacts["round_01.pt"]), map_location="cpu", weights_only=True)
    record = runs[0]["info"]["rounds"][1]
    assert hashing.state_hash(saved["final"]) == record["final_hash"]
    assert hashing.state_hash(saved["mask"]) == record["mask_hash"]
    assert pruning.Mask(saved["mask"]).percent_remaining == pytest.approx(record["percent_remaining"])
    init = torch.load(_artifact_file(exp.artifacts["init.pt"]), map_location="cpu", weights_only=True)
    assert hashing.state_hash(init) == record["init_hash"]
    assert len(loader.find({"config.criterion.name": "random"})) == 1


def _artifact_file(artifact):
    import io
    return io.BytesIO(artifact.content)


def test_supermask_run(db_server, db_name, ticketlab_env):
    result = run_cli("experiments.supermask", "with", *FAST, "seed=4", "supermask.signed_constant=True",
                     "-m", f"{db_server.address}:{db_name}", env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    run = db_server.client()[db_name]["runs"].find_one()
    info = run["info"]
    assert run["status"] == "COMPLETED" and run["config"]["supermask"]["signed_constant"] is True
    assert 0 <= info["test_acc_mean"] <= 1 and info["test_acc_std"] >= 0 and info["eval_samples"] == 3
    assert 0.3 < info["expected_density"] < 0.7
    assert run["config"]["training"]["lr"] == 0.1
    lottery_init = models.weight_state(models.build("lenet300_100", seed=4))
    assert info["init_hash"] == hashing.state_hash(lottery_init), "pairs with lottery runs of the same seed"
    assert [a["name"] for a in run["artifacts"]] == ["scores.pt"]


def test_print_config_documents_and_resolves(ticketlab_env):
    result = run_cli("experiments.lottery", "print_config", "with", "paper_conv4", env=ticketlab_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for text in ("name = 'conv4'", "name = 'cifar10'", "lr = 0.0003", "iterations = 25000", "conv_rate = 0.1",
                 "rounds = 24", "# mask criterion", "# pruned weights are frozen at"):
        assert text in out, text


@pytest.mark.parametrize("update,message", [
    ("criterion.name=largest_final", "criterion.name='largest_final' is not valid; valid choices: large_final"),
    ("treatment.mask1=rewind", "treatment.mask1='rewind' is not valid; valid choices: original, reinit"),
    ("treatment.mask0=zeros", "treatment.mask0='zeros' is not valid; valid choices: zero, init"),
    ("arch.name=resnet", "arch.name='resnet' is not valid; valid choices: lenet300_100, conv2, conv4, conv6"),
    ("data.name=imagenet", "data.name='imagenet' is not valid; valid choices: mnist, fashion_mnist, cifar10"),
    ("training.iterations=0", "training.iterations=0 is out of range"),
    ("criterion.fc_rate=1.5", "criterion.fc_rate=1.5 is out of range; valid range: [0, 1)"),
    ("training.optimizer=adagrad", "training.optimizer='adagrad' is not valid; valid choices: adam, sgd"),
    ("seed=-1", "seed=-1 is out of range; valid range: [0, 4294967295]"),
    ("save_artifacts=maybe", "save_artifacts='maybe' is not valid; valid choices: True, False"),
])
def test_bad_config_fails_before_any_run(db_server, db_name, ticketlab_env, update, message):
    result = run_cli("experiments.lottery", "with", *FAST, update, "-m", f"{db_server.address}:{db_name}",
                     env=ticketlab_env)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert db_server.client()[db_name]["runs"].count_documents({}) == 0, "nothing is written"


def test_missing_data_set_says_what_to_put_where(db_server, db_name, ticketlab_env, tmp_path):
    result = run_cli("experiments.lottery", "with", "fast", "data.name=cifar10", f"data.root={tmp_path}/none",
                     "-m", f"{db_server.address}:{db_name}", env=ticketlab_env)
    assert result.returncode != 0
    assert "put data_batch_1, data_batch_2" in result.stderr and f"{tmp_path}/none/cifar-10-batches-py" in \
        result.stderr


def test_database_down_at_the_end_loses_nothing(tmp_path, ticketlab_env):
    """Stop the server while a run trains; the run finishes, is kept on disk, and uploads when the server is back."""
    server = DatabaseServer(tmp_path / "db").start()
    try:
        env = dict(ticketlab_env, TICKETLAB_DB_TIMEOUT_MS="1000", PYTHONUNBUFFERED="1")
        spec = f"{server.address}:outage"
        process = subprocess.Popen(
            [sys.executable, "-m", "experiments.lottery", "with", *FAST, "training.iterations=1500",
             "training.eval_every=100", "seed=5", "-m", spec],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("round  0"):
                server.stop()
                break
        lines.extend(process.stdout)
        assert process.wait(120) == 0, "".join(lines)
        output = "".join(lines)
        assert "is kept in" in output
        bundles = list((tmp_path / "failed").iterdir())
        assert len(bundles) == 1

        server.start()  # same storage, same port: the data of round 0 survived the restart
        result = run_cli("experiments.upload", "-m", spec, env=env)
        assert result.returncode == 0 and "uploaded run 1" in result.stdout, result.stderr
        db = server.client()["outage"]
        run = db["runs"].find_one({"_id": 1})
        assert run["status"] == "COMPLETED"
        assert [r["round"] for r in run["info"]["rounds"]] == [0, 1, 2]
        assert {a["name"] for a in run["artifacts"]} == {"init.pt", "round_00.pt", "round_01.pt", "round_02.pt"}
        metrics = {m["name"]: m for m in db["metrics"].find({"run_id": 1})}
        assert len(metrics["val_acc"]["values"]) == 3 * 15
        assert {m["name"] for m in run["info"]["metrics"]} == set(metrics)
        assert (tmp_path / "failed" / "uploaded" / bundles[0].name).is_dir()
        again = run_cli("experiments.upload", "-m", spec, env=env)
        assert "no runs waiting" in again.stdout
    finally:
        server.stop()  # also when an assertion fails: no server outlives the test


def test_sweep_runs_the_grid_and_resumes(db_server, db_name, ticketlab_env, tmp_path):
    spec = f"{db_server.address}:{db_name}"
    args = ["-m", spec, "--criteria", "large_final,random", "--seeds", "1,2", "--workers", "2", "--logs",
            str(tmp_path / "logs"), "with", *FAST, "pruning.rounds=1"]
    first = run_cli("experiments.sweep", *args, env=ticketlab_env)
    assert first.returncode == 0, first.stderr
    assert "4 to run" in first.stdout and "4 of 4 runs completed" in first.stdout
    runs = list(db_server.client()[db_name]["runs"].find({}, {"config": 1, "status": 1}))
    assert sorted((r["config"]["criterion"]["name"], r["config"]["seed"]) for r in runs) == \
        [("large_final", 1), ("large_final", 2), ("random", 1), ("random", 2)]
    assert all(r["status"] == "COMPLETED" and r["config"]["training"]["threads"] == 1 for r in runs)
    args[args.index("1,2")] = "1,2,3"
    second = run_cli("experiments.sweep", "--dry-run", *args, env=ticketlab_env)
    assert "6 runs in the grid, 4 already completed, 2 to run" in second.stdout, second.stdout
    assert second.stdout.count("seed=3") == 2


def test_sweep_validates_every_point_first(db_server, db_name, ticketlab_env):
    result = run_cli("experiments.sweep", "-m", f"{db_server.address}:{db_name}", "--criteria",
                     "large_final,bogus", "with", *FAST, env=ticketlab_env)
    assert result.returncode == 2 and "criterion.name='bogus' is not valid" in result.stderr
    assert db_server.client()[db_name]["runs"].count_documents({}) == 0


def test_database_from_environment_uri(db_server, db_name, ticketlab_env):
    """-m DB with TICKETLAB_MONGO_URI reaches that server (how the docker runner reaches the lab's MongoDB)."""
    env = dict(ticketlab_env, TICKETLAB_MONGO_URI=f"mongodb://{db_server.address}/?authSource=admin")
    result = run_cli("experiments.lottery", "with", *FAST, "pruning.rounds=0", "-m", db_name, env=env)
    assert result.returncode == 0, result.stderr
    assert db_server.client()[db_name]["runs"].find_one()["status"] == "COMPLETED"


def test_unreachable_database_is_one_line_before_the_run(ticketlab_env):
    env = dict(ticketlab_env, TICKETLAB_DB_TIMEOUT_MS="500")
    result = run_cli("experiments.lottery", "with", *FAST, "-m", "127.0.0.1:1:nowhere", env=env)
    assert result.returncode != 0
    assert "cannot reach the run database at mongodb://127.0.0.1:1 (database 'nowhere'; " \
           "ServerSelectionTimeoutError: Connection refused)" in result.stderr
    assert "Traceback" not in result.stderr and "round" not in result.stdout
