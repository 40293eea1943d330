"""Bad input through every command's real command line: each is refused with a non-zero exit status and one line
naming the bad value (and the valid choices where there are some), before any training, with nothing written."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess
import sys

import pytest

from tests.faults.conftest import new_db

pytestmark = pytest.mark.faults

LOT, SUP, SWEEP, UP, OMNI, ANA, LOCALDB = ("experiments.lottery", "experiments.supermask", "experiments.sweep",
                                          "experiments.upload", "experiments.omniboard", "analysis",
                                          "experiments.localdb")
TL = "ticketlab"  # the console command (python -m ticketlab runs the same main)
SYN = ["fast", "data.name=synthetic"]
FAKE_PASSWORD = "S3cret-14"  # a made-up password: the refusal must not print it
# (command, arguments ({db}: a fresh HOST:PORT:DB, {mongo}/{name}: its parts, {empty}: a folder without data),
#  words the one line must hold)
CASES = [
    (LOT, ["with", *SYN, "arch.name=resnet50", "-m", "{db}"], ["'resnet50'", "lenet300_100, conv2"]),
    (LOT, ["with", *SYN, "criterion.name=biggest", "-m", "{db}"], ["'biggest'", "large_final"]),
    (LOT, ["with", *SYN, "treatment.mask1=flip", "-m", "{db}"], ["'flip'", "original"]),
    (LOT, ["with", *SYN, "treatment.mask0=reinit", "-m", "{db}"], ["'reinit'", "zero"]),
    (LOT, ["with", "fast", "data.name=imagenet", "-m", "{db}"], ["'imagenet'", "mnist"]),
    (LOT, ["with", *SYN, "data.synthetic_shape=svhn", "-m", "{db}"], ["'svhn'", "cifar"]),
    (LOT, ["with", *SYN, "training.optimizer=rmsprop", "-m", "{db}"], ["'rmsprop'", "adam"]),
    (LOT, ["with", *SYN, "training.lr=-0.1", "-m", "{db}"], ["training.lr=-0.1", "range"]),
    (LOT, ["with", *SYN, "training.lr=fast", "-m", "{db}"], ["training.lr", "fast"]),
    (LOT, ["with", *SYN, "training.iterations=0", "-m", "{db}"], ["training.iterations=0", "range"]),
    (LOT, ["with", *SYN, "training.iterations=1.5", "-m", "{db}"], ["training.iterations=1.5", "integer"]),
    (LOT, ["with", *SYN, "training.batch_size=sixty", "-m", "{db}"], ["training.batch_size", "sixty"]),
    (LOT, ["with", *SYN, "training.eval_every=0", "-m", "{db}"], ["training.eval_every=0", "range"]),
    (LOT, ["with", *SYN, "training.threads=-2", "-m", "{db}"], ["training.threads=-2", "range"]),
    (LOT, ["with", *SYN, "pruning.rounds=-1", "-m", "{db}"], ["pruning.rounds=-1", "range"]),
    (LOT, ["with", *SYN, "pruning.rounds=many", "-m", "{db}"], ["pruning.rounds", "many"]),
    (LOT, ["with", *SYN, "criterion.fc_rate=1.5", "-m", "{db}"], ["criterion.fc_rate=1.5", "range"]),
    (LOT, ["with", *SYN, "criterion.conv_rate=0.1", "arch.name=lenet300_100", "-m", "{db}"],
     ["criterion.conv_rate", "lenet300_100"]),
    (LOT, ["with", *SYN, "data.val_size=0", "-m", "{db}"], ["data.val_size=0", "range"]),
    (LOT, ["with", *SYN, "training.iters=100", "-m", "{db}"], ["training.iters"]),
    (LOT, ["with", *SYN, "learning_rate=0.1", "-m", "{db}"], ["learning_rate"]),
    (LOT, ["with", *SYN, "paper_resnet", "-m", "{db}"], ["paper_resnet"]),
    (LOT, ["with", *SYN, "seed=abc", "-m", "{db}"], ["seed", "abc"]),
    (LOT, ["with", *SYN, "seed=-1", "-m", "{db}"], ["seed=-1", "[0, 4294967295]"]),
    (LOT, ["with", *SYN, "save_artifacts=maybe", "-m", "{db}"], ["save_artifacts='maybe'", "True, False"]),
    (LOT, ["with", "paper_fc", "data.name=synthetic", "training.eval_every=1", "-m", "{db}"],
     ["training.eval_every=1", "eval_every >= 13"]),
    (LOT, ["with", "fast", "data.name=mnist", "data.root={empty}", "-m", "{db}"], ["{empty}", "train-images"]),
    (LOT, ["with", "fast", "data.name=cifar10", "data.root={empty}", "-m", "{db}"], ["{empty}", "data_batch_1"]),
    (LOT, ["with", *SYN, "-m", "127.0.0.1:1:nodb"], ["127.0.0.1:1", "nodb"]),
    (LOT, ["with", *SYN, "-m", "host:port:with:colons"], ["host:port:with:colons"]),
    (LOT, ["-m", "{db}", "--resume", "abc"], ["'abc'", "run id"]),
    (LOT, ["-m", "{db}", "--resume", "999"], ["run 999 not found"]),
    (SUP, ["with", *SYN, "arch.name=vgg", "-m", "{db}"], ["'vgg'", "lenet300_100"]),
    (SUP, ["with", *SYN, "supermask.eval_samples=0", "-m", "{db}"], ["supermask.eval_samples=0", "range"]),
    (SUP, ["with", *SYN, "supermask.score_init=high", "-m", "{db}"], ["supermask.score_init", "high"]),
    (SUP, ["with", *SYN, "supermask.signed_constant=maybe", "-m", "{db}"], ["'maybe'", "True, False"]),
    (SUP, ["with", *SYN, "training.lr=0", "-m", "{db}"], ["training.lr=0", "range"]),
    (SUP, ["with", *SYN, "supermask.start=run", "-m", "{db}"], ["supermask.start=run needs supermask.start_run"]),
    (SUP, ["with", *SYN, "-m", "127.0.0.1:1:nodb"], ["127.0.0.1:1", "nodb"]),
    (SWEEP, ["-m", "{db}", "--criteria", "large_final,biggest", "with", *SYN], ["'biggest'", "large_final"]),
    (SWEEP, ["-m", "{db}", "--workers", "0", "with", *SYN], ["--workers"]),
    (SWEEP, ["-m", "{db}", "--workers", "two", "with", *SYN], ["'two'"]),
    (SWEEP, ["-m", "{db}", "--seeds", "1,x", "with", *SYN], ["'x'"]),
    (SWEEP, ["-m", "{db}", "--grid", "training.lr", "with", *SYN], ["'training.lr'", "KEY=V1,V2"]),
    (SWEEP, ["-m", "{db}", "--grid", "training.lr=0.1,-1", "with", *SYN], ["training.lr=-1", "range"]),
    (SWEEP, ["-m", "{db}", "--experiment", "resnet", "with", *SYN], ["'resnet'", "'lottery', 'supermask'"]),
    (SWEEP, ["-m", "{db}", "--experiment", "supermask", "--mask1", "original", "with", *SYN], ["--mask1"]),
    (SWEEP, ["-m", "127.0.0.1:1:nodb", "with", *SYN], ["127.0.0.1:1", "nodb"]),
    (SWEEP, ["-m", "a:b:c:d", "with", *SYN], ["a:b:c:d"]),
    (UP, ["-m", "a:b:c:d"], ["a:b:c:d"]),
    (UP, ["-m", "127.0.0.1:1:nodb", "--failure-dir", "{bundles}"], ["127.0.0.1:1", "nodb"]),
    (OMNI, ["-m", "a:b:c:d"], ["a:b:c:d"]),
    (OMNI, ["-m", "127.0.0.1:1:nodb"], ["nodb"]),
    (OMNI, ["-m", "{db}", "--port", "ninety"], ["'ninety'"]),
    (OMNI, ["-m", "{db}", "--port", "70000"], ["70000"]),
    (ANA, ["runs", "--mongo", "127.0.0.1:1", "--db", "nodb"], ["127.0.0.1:1"]),
    (ANA, ["runs", "--mongo", "{mongo}", "--db", "{name}"], ["{name}"]),
    (ANA, ["runs", "--mongo", "{mongo}", "--db", "{name}", "--where", "criterion"], ["'criterion'", "KEY=VALUE"]),
    (ANA, ["reprot", "--mongo", "{mongo}", "--db", "{name}"], ["'reprot'", "report"]),
    (LOCALDB, ["restart"], ["'restart'", "'start', 'stop', 'status'"]),
    (LOCALDB, ["start", "--port", "abc"], ["'abc'"]),
    (TL, ["frobnicate"], ["frobnicate"]),
    (TL, ["runs", "-m", "a:b:c:d"], ["a:b:c:d"]),
    (TL, ["runs", "-m", "127.0.0.1:1:nodb"], ["127.0.0.1:1"]),
    (TL, ["sweep", "-m", "{db}", "--criteria", "biggest", "with", *SYN], ["'biggest'", "large_final"]),
    (TL, ["db", "restart"], ["'restart'"]),
    (ANA, ["runs", "-m", f"mongodb://ticket:{FAKE_PASSWORD}@127.0.0.1:1/nodb?authSource=admin"], ["127.0.0.1:1"]),
    (LOT, ["with", *SYN, "-m", f"mongodb://ticket:{FAKE_PASSWORD}@127.0.0.1:1/nodb?authSource=admin"], ["127.0.0.1:1"]),
]

SACRED_LOG = re.compile(r"^(INFO|WARNING|DEBUG) - ")


def error_lines(stderr: str) -> list[str]:
    """The lines that report the error, Sacred's INFO/WARNING log lines aside (usage errors print no usage block:
    ``ticketlab.cli.Parser``)."""
    return [line for line in stderr.splitlines() if line.strip() and not SACRED_LOG.match(line)]


def documents(client) -> int:
    return sum(client[db][c].count_documents({}) for db in client.list_database_names()
               if db not in ("admin", "local", "config") for c in client[db].list_collection_names())


def test_bad_input_is_refused_in_one_line_with_nothing_written(db_server, tmp_path, fault_table):
    empty = tmp_path / "empty"
    empty.mkdir()
    bundles = tmp_path / "bundles" / "lottery_1_x"  # a bundle waiting, so that upload tries the database
    bundles.mkdir(parents=True)
    (bundles / "run.pickle").write_bytes(b"")
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path / "failed"), TICKETLAB_DATA=str(empty),
               TICKETLAB_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
               TICKETLAB_DB_TIMEOUT_MS="1000")
    client = db_server.client()
    before = documents(client)

    def one(case):
        module, args, words = case
        name = new_db()
        values = {"db": f"{db_server.address}:{name}", "mongo": db_server.address, "name": name,
                  "empty": str(empty), "bundles": str(bundles.parent)}
        args = [a.format(**values) for a in args]
        words = [w.format(**values) for w in words]
        result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                                timeout=180, stdin=subprocess.DEVNULL)
        lines = error_lines(result.stderr)
        problems = []
        if result.returncode == 0:
            problems.append("exit status 0")
        if "Traceback" in result.stderr:
            problems.append("a traceback")
        if len(lines) != 1:
            problems.append(f"{len(lines)} error lines")
        elif not all(w in lines[0] for w in words):
            problems.append(f"the line lacks {[w for w in words if w not in lines[0]]}")
        if FAKE_PASSWORD in result.stdout + result.stderr:
            problems.append("the password printed")
        if "round  0" in result.stdout or "Started run" in result.stderr:
            problems.append("training started")
        written = sum(client[name][c].count_documents({}) for c in client[name].list_collection_names())
        if written:
            problems.append(f"{written} documents written")
        return module, " ".join(args), lines[-1] if lines else result.stderr[-300:], problems

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, CASES))
    report = [f"{'ok ' if not p else 'BAD'} {m} {a}\n      -> {line}" + (f"\n      !! {'; '.join(p)}" if p else "")
              for m, a, line, p in results]
    print("\n".join(report))
    refused = sum(not p for *_, p in results)
    fault_table(f"bad input ({refused} of {len(CASES)} refused in one line)", injected=len(results), finished=0,
                outcome="ok" if refused == len(CASES) else f"{len(CASES) - refused} unclear")
    assert documents(client) == before
    assert len(CASES) >= 40
    assert refused == len(CASES), "\n".join(r for r in report if not r.startswith("ok"))
