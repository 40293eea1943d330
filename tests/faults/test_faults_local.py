"""Local failures: a failure folder that cannot be written or is full while the database is down, corrupted and
half-written recovery bundles, a data folder with a truncated file. One line, nothing marked COMPLETED that is
not, a bundle that cannot be read kept for a later try."""

from __future__ import annotations

import gzip
import pickle
import resource
import struct

import numpy as np
import pytest

from tests.conftest import run_cli
from experiments.observers import BundleError, failed_run_bundles, read_bundle
from tests.faults.conftest import BEAT, RUN, before_injection, finish, kill_server, live, new_db, start, wait_until

pytestmark = pytest.mark.faults


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(("ticketlab:", "error:", "ERROR -"))
            and "Failed after" not in line]


def file_size_limit(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("case", ["unwritable", "full"])
def test_failure_folder_unwritable_or_full(own_server, fault_env, fault_table, tmp_path, case):
    server = own_server()
    db_name = new_db()
    spec = f"{server.address}:{db_name}"
    if case == "unwritable":  # a folder inside a regular file: not creatable, even by root
        (tmp_path / "a_file").write_text("x")
        env = dict(fault_env, TICKETLAB_FAILURE_DIR=str(tmp_path / "a_file" / "failed"))
        limit = None
    else:  # the disk is full for this process: `ulimit -f` 2 KiB, reached by the bundle's run document
        env, limit = fault_env, file_size_limit(2048)
    run = start("experiments.lottery", "-m", spec, *BEAT, *RUN, "save_artifacts=False", env=env,
                preexec_fn=limit)
    db = server.client()[db_name]
    try:
        wait_until(lambda: db["runs"].count_documents({"info.rounds.0": {"$exists": True}}) == 1, processes=[run])
        before_injection([run])
        training = live(run)
        killed = kill_server(server)
        output = finish(run)
    finally:
        finish(run, timeout=1) if run.poll() is None else None
    assert killed and training, "the database was not killed under the live run"
    server = own_server(server.storage, server.port)
    db = server.client()[db_name]
    lines = error_lines(output)
    completed = db["runs"].count_documents({"status": "COMPLETED"})
    # database down AND no disk: the run cannot be kept anywhere; what must hold is that it says so (one line,
    # exit status 1) and that nothing claims it finished
    fault_table(f"failure folder {case} while the database is down", injected=1, finished=0, lost=1,
                outcome="lost, said in 1 line, exit 1" if run.returncode != 0 and len(lines) == 1 and not completed
                else "FAILED")
    assert run.returncode != 0 and "Traceback" not in output, output
    assert len(lines) == 1 and "is LOST" in lines[0], output
    assert completed == 0
    leftovers = list((tmp_path / "failed").glob("*")) if case == "full" else []
    assert not leftovers  # no half-written bundle left behind


def test_corrupted_and_half_written_bundles_are_kept(db_server, fault_env, fault_table, tmp_path):
    failed = tmp_path / "failed"
    entry = {"_id": 1, "experiment": {"name": "lottery"}, "status": "COMPLETED", "config": {"seed": 1}}
    whole = pickle.dumps(entry)
    bundles = {
        "lottery_1_truncated": {"run.pickle": whole[: len(whole) // 2], "metrics.pickle": pickle.dumps({}),
                                "artifacts.json": b"[]"},
        "lottery_2_garbage": {"run.pickle": whole, "metrics.pickle": b"\x00garbage", "artifacts.json": b"[]"},
        "lottery_3_missing_artifact": {"run.pickle": whole, "metrics.pickle": pickle.dumps({}),
                                       "artifacts.json": b'[{"name": "round_00.pt", "file": "artifacts/x.pt"}]'},
        "lottery_4_bad_json": {"run.pickle": whole, "metrics.pickle": pickle.dumps({}), "artifacts.json": b"[{"},
        "lottery_5_x.partial": {"run.pickle": whole},  # half-written: the observer never renamed it
    }
    for name, files in bundles.items():
        (failed / name).mkdir(parents=True)
        for file, data in files.items():
            (failed / name / file).write_bytes(data)
    # the fault, checked: every planted bundle is one the upload cannot take (unreadable, or never renamed whole)
    listed = set(failed_run_bundles(failed))
    broken = sum(bundle.name.endswith(".partial") and bundle not in listed or unreadable(bundle)
                 for bundle in failed.iterdir())
    db_name = new_db()
    result = run_cli("experiments.upload", "-m", f"{db_server.address}:{db_name}", env=fault_env)
    client = db_server.client()
    written = sum(client[db_name][c].count_documents({}) for c in client[db_name].list_collection_names())
    lines = result.stderr.strip().splitlines()
    kept = sorted(p.name for p in failed.iterdir())
    fault_table("corrupted / half-written recovery bundles uploaded", injected=broken, finished=0, lost=0,
                outcome="ok" if result.returncode != 0 and len(lines) == 4 and written == 0 else "FAILED")
    assert broken == len(bundles)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 4 and all("cannot be read" in line and "kept" in line for line in lines), result.stderr
    assert written == 0
    assert kept == sorted(bundles)  # every bundle stays for a later try


def unreadable(bundle) -> bool:
    try:
        read_bundle(bundle)
    except BundleError:
        return True
    return False


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("layout", ["mnist", "mnist.gz", "cifar10"])
def test_truncated_data_file(db_server, fault_env, fault_table, tmp_path, layout):
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    if layout.startswith("mnist"):
        raw = root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for split, n in (("train", 2000), ("t10k", 200)):
            write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
            write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, (n,)))
        victim = raw / "train-images-idx3-ubyte"
        if layout == "mnist.gz":
            data = victim.read_bytes()
            victim.unlink()
            victim = raw / "train-images-idx3-ubyte.gz"
            victim.write_bytes(gzip.compress(data))
        whole = victim.stat().st_size
        victim.write_bytes(victim.read_bytes()[: whole * 2 // 3])
        name = "mnist"
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            data = {"data": rng.integers(0, 255, (100, 3072)).astype(np.uint8),
                    "labels": rng.integers(0, 10, 100).tolist()}
            (folder / batch).write_bytes(pickle.dumps(data, protocol=2))
        victim = folder / "data_batch_3"
        whole = victim.stat().st_size
        victim.write_bytes(victim.read_bytes()[:20000])
        name = "cifar10"
    db_name = new_db()
    result = run_cli("experiments.lottery", "with", "fast", f"data.name={name}", f"data.root={root}",
                     "data.val_size=100", "-m", f"{db_server.address}:{db_name}", env=fault_env)
    client = db_server.client()
    written = sum(client[db_name][c].count_documents({}) for c in client[db_name].list_collection_names())
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("INFO", "WARN"))]
    truncated = int(victim.stat().st_size < whole)  # the fault, checked: the file the run reads is cut short
    ok = result.returncode != 0 and len(lines) == 1 and victim.name in lines[0] and written == 0
    fault_table(f"truncated data file ({layout})", injected=truncated, finished=0, lost=0,
                outcome="ok" if ok and truncated else "FAILED")
    assert truncated and ok, result.stderr
    assert "truncated" in lines[0]
