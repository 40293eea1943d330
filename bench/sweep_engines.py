"""Throughput of a sweep of 8 short runs: Dask (2 single-thread workers) vs local (2 workers) vs a bare pool.

    python bench/sweep_engines.py [--runs 8] [--repeats 2] [--iterations 100]

Starts a SecantusDB server and a Dask cluster (``dask scheduler`` + 2 ``dask worker --nthreads 1`` processes on
127.0.0.1) in a temporary folder, then, interleaved and repeated, runs the same grid of ``--runs`` short lottery
runs (synthetic data, 2 rounds) three ways, each into a fresh database:

* ``bare``: the simplest correct baseline, a 2-thread pool of the same ``python -m experiments.lottery`` commands;
* ``local``: ``python -m experiments.sweep --executor local --workers 2`` (validation, claims, progress);
* ``dask``: ``python -m experiments.sweep --executor dask --scheduler tcp://...`` on the running cluster.

Prints each one's wall time (median of ``--repeats``) and the engine's overhead per run in seconds, measured as
the worker-slot time not spent inside a run process: (wall time x workers - the runs' own wall times) / runs. The
runs' times come from the same sweep (the bare pool times its subprocesses; a sweep unit stores its run process's
wall time in its claim), so the measure holds up when other work slows every run down; the wall-time difference
to the bare pool is printed too, but it is only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

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
from ticketlab.cli import Parser  # noqa: E402

WORKERS = 2


def grid(runs: int, iterations: int) -> tuple[list[str], list[list[str]]]:
    """Sweep flags and the matching per-run ``with`` arguments: seeds 1..runs of one condition family."""
    shared = ["fast", "data.name=synthetic", "pruning.rounds=1", f"training.iterations={iterations}"]
    seeds = [str(s) for s in range(1, runs + 1)]
    return (["--criteria", "large_final", "--seeds", ",".join(seeds), "with", *shared],
            [[*shared, "criterion.name=large_final", f"seed={s}"] for s in seeds])


def bare(points: list[list[str]], spec: str, env: dict) -> float:
    """Run the points in a 2-thread pool of subprocesses; the sum of the runs' wall times."""
    def one(point):
        command = [sys.executable, "-m", "experiments.lottery", "with", *point, "training.threads=1", "-m", spec]
        start = time.monotonic()
        subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        return sum(pool.map(one, points))


def sweep(flags: list[str], spec: str, env: dict, logs: Path, *executor: str) -> None:
    command = [sys.executable, "-m", "experiments.sweep", "-m", spec, "--workers", str(WORKERS), "--logs",
               str(logs), *executor, *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def main(argv=None) -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
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
    overheads: dict[str, list[float]] = {name: [] for name in times}
    try:
        with DaskCluster(workers=WORKERS, env=env, log_dir=folder) as cluster:
            for repeat in range(args.repeats):
                names = list(times)[repeat % 3:] + list(times)[:repeat % 3]  # rotated: drift hits all three
                for name in names:
                    spec = f"{server.address}:{name}_{repeat}"
                    start = time.perf_counter()
                    if name == "bare":
                        in_runs = bare(points, spec, env)
                    else:
                        executor = ["--executor", "dask", "--scheduler", cluster.address] if name == "dask" else []
                        sweep(flags, spec, env, folder / f"logs_{name}_{repeat}", *executor)
                    times[name].append(time.perf_counter() - start)
                    db = server.client()[f"{name}_{repeat}"]
                    if name != "bare":
                        in_runs = sum(c["seconds"] for c in db["claims"].find({}, {"seconds": 1}))
                    overheads[name].append((times[name][-1] * WORKERS - in_runs) / args.runs)
                    completed = db["runs"].count_documents({"status": "COMPLETED"})
                    assert completed == args.runs, f"{name}: {completed} of {args.runs} runs COMPLETED"
                    print(f"  repeat {repeat + 1}: {name:5s} {times[name][-1]:6.1f} s wall, slot time outside "
                          f"runs {overheads[name][-1]:5.2f} s per run", flush=True)
    finally:
        server.stop()
    base = statistics.median(times["bare"])
    print(f"\nsweep of {args.runs} runs x 2 rounds x {args.iterations} steps, {WORKERS} single-thread workers "
          f"(median of {args.repeats}; load average {os.getloadavg()[0]:.1f} at the end):")
    for name, values in times.items():
        wall, outside = statistics.median(values), statistics.median(overheads[name])
        print(f"  {name:5s}: {wall:6.1f} s wall, {args.runs / wall * 60:5.1f} runs/min, slot time outside runs "
              f"{outside:5.2f} s per run (engine overhead vs bare {outside - statistics.median(overheads['bare']):+.2f}"
              f" s); wall vs bare {(wall - base) / args.runs * WORKERS:+.2f} s per run")

if __name__ == "__main__":
    main()
