"""``analysis.load_runs`` against the simplest correct baseline, a plain projected pymongo ``find``, in one process.

    python bench/load_runs.py [--runs 1000] [--rounds 20] [--repeats 5]

Starts a SecantusDB server in a temporary folder, writes ``--runs`` lottery run documents shaped like real ones
(config, 21-round ``info.rounds``, host, captured output, source list, metric references), then times, interleaved:

* ``analysis.load_runs`` of every run (goal: 1,000 runs x 21 rounds in at most 1.5 s), and of the study's 12 runs
  (4 criteria x 3 seeds, selected with ``where`` from the same database; goal: at most 0.3 s);
* the baseline: a plain ``find`` projected on the same fields (status, experiment name, config, info.rounds),
  documents only, no frame: what reading the same data costs at the least (every run, and the study's 12 runs
  with the same filter on the server);
* incense's bulk ``find``, for reference (it decodes whole documents).

Prints the median of ``--repeats`` (each repeat runs every contender once, in turn) and the ratios. Other work on
the machine shifts absolute times: compare the ratios.
"""

from __future__ import annotations

import datetime
import random
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import incense
import pymongo

import analysis
from experiments.localdb import DatabaseServer
from ticketlab.cli import Parser

CRITERIA = ["large_final", "random", "magnitude_increase", "large_init", "movement"]
STUDY = {"criterion": ["large_final", "random", "magnitude_increase", "large_init"], "seed": [1, 2, 3]}


def fake_run(run_id: int, rounds: int, rng: random.Random) -> dict:
    criterion = CRITERIA[run_id % len(CRITERIA)]
    seed = (run_id - 1) // len(CRITERIA) + 1
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
                   "data": {"name": "fashion_mnist", "root": "~/.ticketlab/data", "val_size": 5000, "split_seed": 0,
                            "synthetic_shape": "mnist", "synthetic_train": 6000, "synthetic_test": 1000},
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


def plain_find(uri: str, db: str, where: dict | None = None) -> int:
    """The baseline: the same fields, projected, as documents (no frame); ``where`` as a server filter."""
    query = {"experiment.name": "lottery", **{f"config.{'criterion.name' if k == 'criterion' else k}": {"$in": v}
                                              for k, v in (where or {}).items()}}
    with pymongo.MongoClient(uri) as client:
        docs = list(client[db]["runs"].find(query, {"status": 1, "experiment.name": 1, "config": 1,
                                                    "info.rounds": 1}))
    return sum(len(d["info"]["rounds"]) for d in docs)


def via_incense_bulk(uri: str, db: str) -> int:
    loader = incense.ExperimentLoader(mongo_uri=uri, db_name=db)
    return sum(len(exp.info["rounds"]) for exp in loader.find({"experiment.name": "lottery"}))


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20, help="pruning rounds per run (rounds + 1 records)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    contenders = {
        "analysis.load_runs, every run (frame)": lambda: len(analysis.load_runs(spec)),
        "plain projected find, every run (documents)": lambda: plain_find(server.uri, "bench"),
        "analysis.load_runs, the study's 12 runs": lambda: len(analysis.load_runs(spec, where=STUDY)),
        "plain projected find, the study's 12 runs": lambda: plain_find(server.uri, "bench", STUDY),
        "incense bulk find, every run (reference)": lambda: via_incense_bulk(server.uri, "bench"),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        server = DatabaseServer(Path(tmp) / "db").start()
        spec = f"{server.address}:bench"
        try:
            rng = random.Random(0)
            with server.client() as client:
                client["bench"]["runs"].insert_many([fake_run(i, args.rounds, rng) for i in range(1, args.runs + 1)])
            results = {}
            for _ in range(args.repeats):
                for name, fn in contenders.items():
                    start = time.perf_counter()
                    results[name] = fn()
                    times[name].append(time.perf_counter() - start)
            frame = analysis.load_runs(spec)
        finally:
            server.stop()
    rows = args.runs * (args.rounds + 1)
    assert results["analysis.load_runs, every run (frame)"] == results["plain projected find, every run (documents)"] \
        == results["incense bulk find, every run (reference)"] == rows
    assert results["analysis.load_runs, the study's 12 runs"] == \
        results["plain projected find, the study's 12 runs"] == 12 * (args.rounds + 1)
    assert frame["run_id"].nunique() == args.runs and frame["test_acc"].notna().all()
    median = {name: statistics.median(t) for name, t in times.items()}
    print(f"{args.runs} runs x {args.rounds + 1} rounds = {rows} rows; median of {args.repeats} interleaved repeats")
    for name, seconds in median.items():
        print(f"  {name:<46} {seconds:8.3f} s")
    full, base = median["analysis.load_runs, every run (frame)"], median["plain projected find, every run (documents)"]
    study, study_base = median["analysis.load_runs, the study's 12 runs"], \
        median["plain projected find, the study's 12 runs"]
    print(f"  load_runs / plain find: every run {full / base:.2f}x, the study's 12 runs {study / study_base:.2f}x")
    print(f"  goals: every run <= 1.5 s ({full:.2f} s), the study's 12 runs <= 0.3 s ({study:.3f} s); a filtered "
          f"find scans every run document on the server")


if __name__ == "__main__":
    main()
