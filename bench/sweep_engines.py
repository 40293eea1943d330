"""Throughput of a sweep of 8 short runs: Dask (2 single-thread workers) vs local (2 workers) vs a bare pool.

    python bench/sweep_engines.py [--runs 8] [--repeats 2] [--iterations 100]

Starts a SecantusDB server and a Dask cluster (``dask scheduler`` + 2 ``dask worker --nthreads 1`` processes on
127.0.0.1) in a temporary folder, then, interleaved and repeated, runs the same grid of ``--runs`` short lottery
runs (synthetic data, 2 rounds) three ways, each into a fresh database:

* ``bare``: the simplest correct baseline, a 2-thread pool of the same ``python -m experiments.lottery`` commands;
* ``local``: ``python -m experiments.sweep --executor local --workers 2`` (validation, claims, progress);
* ``dask``: ``python -m experiments.sweep --executor dask --scheduler tcp://...`` on the running cluster.

Prints each one's wall time (median of ``--repeats``) and the engine's overhead per run in seconds:
(wall time - bare wall time) / runs x workers, i.e. the time one worker slot spends per run beyond the run itself.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.engines, run from anywhere

from experiments.localdb import DatabaseServer  # noqa: E402
from tests.engines import DaskCluster  # noqa: E402

WORKERS = 2


def grid(runs: int, iterations: int) -> tuple[list[str], list[list[str]]]:
    """Sweep flags and the matching per-run ``with`` arguments: seeds 1..runs of one condition family."""
    shared = ["fast", "data.name=synthetic", "pruning.rounds=1", f"training.iterations={iterations}"]
    seeds = [str(s) for s in range(1, runs + 1)]
    return (["--criteria", "large_final", "--seeds", ",".join(seeds), "with", *shared],
            [[*shared, "criterion.name=large_final", f"seed={s}"] for s in seeds])


def bare(points: list[list[str]], spec: str, env: dict) -> None:
    def one(point):
        command = [sys.executable, "-m", "experiments.lottery", "with", *point, "training.threads=1", "-m", spec]
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, points))


def sweep(flags: list[str], spec: str, env: dict, logs: Path, *executor: str) -> None:
    command = [sys.executable, "-m", "experiments.sweep", "-m", spec, "--workers", str(WORKERS), "--logs",
               str(logs), *executor, *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=100, help="training steps per round")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    env = dict(os.environ, TICKETLAB_DATA=str(folder / "data"), TICKETLAB_FAILURE_DIR=str(folder / "failed"),
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    flags, points = grid(args.runs, args.iterations)
    server = DatabaseServer(folder / "db").start()
    times: dict[str, list[float]] = {"bare": [], "local": [], "dask": []}
    try:
        with DaskCluster(workers=WORKERS, env=env, log_dir=folder) as cluster:
            for repeat in range(args.repeats):
                names = list(times)[repeat % 3:] + list(times)[:repeat % 3]  # rotated: drift hits all three
                for name in names:
                    spec = f"{server.address}:{name}_{repeat}"
                    start = time.perf_counter()
                    if name == "bare":
                        bare(points, spec, env)
                    elif name == "local":
                        sweep(flags, spec, env, folder / f"logs_{name}_{repeat}")
                    else:
                        sweep(flags, spec, env, folder / f"logs_{name}_{repeat}", "--executor", "dask",
                              "--scheduler", cluster.address)
                    times[name].append(time.perf_counter() - start)
                    completed = server.client()[f"{name}_{repeat}"]["runs"].count_documents({"status": "COMPLETED"})
                    assert completed == args.runs, f"{name}: {completed} of {args.runs} runs COMPLETED"
                    print(f"  repeat {repeat + 1}: {name:5s} {times[name][-1]:6.1f} s", flush=True)
    finally:
        server.stop()
    base = statistics.median(times["bare"])
    print(f"\nsweep of {args.runs} runs x 2 rounds x {args.iterations} steps, {WORKERS} single-thread workers "
          f"(median of {args.repeats}; load average {os.getloadavg()[0]:.1f} at the end):")
    for name, values in times.items():
        wall = statistics.median(values)
        overhead = (wall - base) / args.runs * WORKERS
        print(f"  {name:5s}: {wall:6.1f} s wall, {args.runs / wall * 60:5.1f} runs/min, "
              f"overhead per run vs bare {overhead:+.2f} s")
    dask, local = statistics.median(times["dask"]), statistics.median(times["local"])
    print(f"  dask vs local: {(dask - local) / args.runs * WORKERS:+.2f} s per run ({dask / local:.2f}x wall time)")


if __name__ == "__main__":
    main()
