"""``analysis.load_runs`` vs incense's per-experiment path, on the same database, in one process.

    python bench/load_runs.py [--runs 1000] [--rounds 20] [--repeats 3]

Starts a SecantusDB server in a temporary folder, writes ``--runs`` lottery run documents shaped like real ones
(config, 20-round ``info.rounds``, host, captured output, source list, metric references), then builds the same
tidy frame (one row per run and round) two ways:

* ``analysis.load_runs``: the run count and one ``find`` over the compact ``run_index`` collection (the first
  call builds the index, since these documents were inserted directly: timed apart as "first call");
* incense, the way a user loads runs one by one: ``ExperimentLoader.find_by_id`` per run, then
  ``exp.config`` and ``exp.info["rounds"]``.

Also times incense's bulk ``find`` for reference. Prints absolute seconds (median of ``--repeats``) and the ratio.
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import incense
import pandas as pd

import analysis
from experiments.localdb import DatabaseServer

CRITERIA = ["large_final", "random", "magnitude_increase", "large_init", "movement"]


def fake_run(run_id: int, rounds: int, rng: random.Random) -> dict:
    criterion = CRITERIA[run_id % len(CRITERIA)]
    seed = run_id // len(CRITERIA) + 1
    percent = 100.0
    records = []
    for k in range(rounds + 1):
        records.append({
            "round": k, "percent_remaining": percent, "init_hash": f"{seed:064x}", "start_hash": f"{k:064x}",
            "final_hash": f"{rng.getrandbits(256):064x}", "mask_hash": f"{rng.getrandbits(256):064x}",
            "val_loss": rng.random(), "val_acc": rng.random(), "test_loss": rng.random(), "test_acc": rng.random(),
            "early_stop_iteration": rng.randrange(100, 50_000, 100), "final_val_acc": rng.random(),
            "final_val_loss": rng.random(), "final_test_acc": rng.random(), "untrained_test_acc": rng.random(),
            "train_seconds": rng.random() * 60,
        })
        percent *= 0.8
    return {
        "_id": run_id, "experiment": {"name": "lottery", "base_dir": "/work", "sources": [
            [f"experiments/m{i}.py", f"{i:024x}"] for i in range(12)], "dependencies": ["torch==2.14.1"] * 10},
        "format": "MongoObserver-0.7.0", "command": "main", "status": "COMPLETED",
        "host": {"hostname": "lab", "os": ["Linux", "x"], "python_version": "3.11.7"},
        "start_time": datetime.datetime(2026, 1, 1), "stop_time": datetime.datetime(2026, 1, 1, 1),
        "config": {"seed": seed, "save_artifacts": True, "arch": {"name": "lenet300_100"},
                   "data": {"name": "fashion_mnist", "root": "~/.ticketlab/data", "val_size": 5000, "split_seed": 0},
                   "training": {"optimizer": "adam", "lr": 0.0012, "iterations": 50000, "batch_size": 60,
                                "eval_every": 100, "threads": 1},
                   "criterion": {"name": criterion, "fc_rate": 0.2, "output_rate": 0.1, "conv_rate": None},
                   "treatment": {"mask1": "original", "mask0": "zero"}, "pruning": {"rounds": rounds}},
        "meta": {"command": "main", "options": {"--mongo_db": "x"}},
        "captured_out": "".join(f"round {k:2d}: ...\n" for k in range(rounds + 1)) * 4,
        "info": {"rounds": records, "condition_hash": f"{run_id:016x}", "schedule": [0.0] * (rounds + 1),
                 "metrics": [{"name": n, "id": f"{run_id:024x}"} for n in ("train_loss", "val_loss", "val_acc")]},
        "artifacts": [], "resources": [], "result": 0.5, "heartbeat": datetime.datetime(2026, 1, 1, 1),
    }


def via_incense_per_run(uri: str, db: str, run_ids: list[int]) -> pd.DataFrame:
    loader = incense.ExperimentLoader(mongo_uri=uri, db_name=db)
    rows = []
    for run_id in run_ids:
        exp = loader.find_by_id(run_id)
        config = exp.config
        for record in exp.info["rounds"]:
            rows.append({"run_id": exp.id, "status": exp.status, "seed": config["seed"],
                         "criterion": config["criterion"]["name"], "mask1": config["treatment"]["mask1"],
                         **{f: record[f] for f in analysis.query.ROUND_FIELDS}})
    return pd.DataFrame(rows)


def via_incense_bulk(uri: str, db: str) -> int:
    loader = incense.ExperimentLoader(mongo_uri=uri, db_name=db)
    return sum(len(exp.info["rounds"]) for exp in loader.find({"experiment.name": "lottery"}))


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20, help="pruning rounds per run (rounds + 1 records)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        server = DatabaseServer(Path(tmp) / "db").start()
        try:
            rng = random.Random(0)
            with server.client() as client:
                client["bench"]["runs"].insert_many([fake_run(i, args.rounds, rng) for i in range(1, args.runs + 1)])
            ids = list(range(1, args.runs + 1))
            first, _ = timed(lambda: analysis.load_runs(server.uri, "bench"), 1)
            fast, frame = timed(lambda: analysis.load_runs(server.uri, "bench"), args.repeats)
            slow, reference = timed(lambda: via_incense_per_run(server.uri, "bench", ids), args.repeats)
            bulk, _ = timed(lambda: via_incense_bulk(server.uri, "bench"), args.repeats)
        finally:
            server.stop()
    assert len(frame) == len(reference) == args.runs * (args.rounds + 1)
    assert frame["test_acc"].tolist() == reference["test_acc"].tolist(), "both paths load the same numbers"
    print(f"{args.runs} runs x {args.rounds + 1} rounds = {len(frame)} rows (median of {args.repeats})")
    print(f"  analysis.load_runs (run_index, 2 queries):  {fast:8.3f} s")
    print(f"  incense find_by_id per run:                 {slow:8.3f} s")
    print(f"  load_runs first call (indexes the runs):    {first:8.3f} s")
    print(f"  incense bulk find (for reference):          {bulk:8.3f} s")
    print(f"  load_runs speed-up over incense per run: {slow / fast:.1f}x (goal >= 20x); over bulk: "
          f"{bulk / fast:.1f}x")


if __name__ == "__main__":
    main()
