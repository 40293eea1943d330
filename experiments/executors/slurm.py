"""``--executor slurm``: plain ``sbatch`` job arrays (no extra Python package, nothing to run on the login node but the
sweep; the cluster's own scheduling, accounting and limits apply), ``--workers`` array tasks at a time, ``--threads``
CPUs and with ``--gpus`` one GPU per task. Each array task runs ``python -m experiments.executors BATCH.json``
(one unit: ``run_unit``) with the sweep's python in the checkout's folder, so the cluster must share the checkout,
the venv and the logs folder (the usual home or project file system). Logs: ``<logs>/slurm-<job>_<task>.out``
beside the runs' own logs. Job states come from ``squeue``; what a finished job did comes from the database.
``--detach`` leaves the jobs queued."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from experiments import claims
from experiments.executors.base import Executor, register
from experiments.executors.units import COMPLETED, FAILED, HELD, LOST, Unit, run_unit
from ticketlab.cli import Parser

REPO = Path(__file__).resolve().parents[2]  # the checkout the array tasks run in


@register
class SlurmExecutor(Executor):
    """Units as ``sbatch`` job arrays; see the module docstring."""

    name = "slurm"
    help = "Slurm job arrays (--partition, --time, --mem, --sbatch)"
    FLAGS = (("--partition", {"default": None, "help": "the partition"}),
             ("--time", {"default": None, "dest": "time_limit", "help": "time limit per run, e.g. 12:00:00"}),
             ("--mem", {"default": None, "help": "memory per run, e.g. 8G"}),
             ("--sbatch", {"action": "append", "default": [], "metavar": "OPTION",
                           "help": "another sbatch option, e.g. --sbatch=--account=lab (repeatable)"}))
    ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
             "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}

    def __init__(self, db, logs: Path, threads: int, max_running: int | None = None, partition: str | None = None,
                 time_limit: str | None = None, mem: str | None = None, gpus: int = 0,
                 extra: list[str] | None = None):
        self.db, self.logs, self.threads = db, Path(logs), threads
        self.options = [f"--cpus-per-task={threads}"]
        self.options += [f"--partition={partition}"] if partition else []
        self.options += [f"--time={time_limit}"] if time_limit else []
        self.options += [f"--mem={mem}"] if mem else []
        self.options += [f"--gres=gpu:{gpus}"] if gpus else []
        self.options += extra or []
        self.max_running = max_running
        self.jobs: dict[str, dict[int, Unit]] = {}  # job id -> array task id -> unit
        self.batches = 0

    @classmethod
    def check(cls, args, parser) -> None:
        if not shutil.which("sbatch"):
            parser.error("--executor slurm: sbatch is not on PATH (run the sweep on a Slurm login node)")

    @classmethod
    def describe(cls, args, devices: list[str] | None) -> str:
        return "Slurm job arrays"

    @classmethod
    def create(cls, args, db, logs: Path, devices: list[str] | None) -> "SlurmExecutor":
        return cls(db, logs, args.threads, args.workers, args.partition, args.time_limit, args.mem,
                   1 if args.gpus else 0, args.sbatch)

    def sbatch_command(self, batch: Path, n: int) -> list[str]:
        array = f"0-{n - 1}" + (f"%{self.max_running}" if self.max_running else "")
        return ["sbatch", "--parsable", f"--array={array}", f"--job-name=ticketlab-{batch.stem}",
                f"--chdir={REPO}", f"--output={self.logs}/slurm-%A_%a.out", "--export=ALL", *self.options,
                f"--wrap=exec {shlex.quote(sys.executable)} -m experiments.executors {shlex.quote(str(batch))}"]

    def submit(self, units: list[Unit]) -> None:
        if not units:
            return
        self.batches += 1
        batch = self.logs / f"batch_{self.batches:03d}.json"
        batch.write_text(json.dumps([dataclasses.asdict(u) for u in units], indent=1))
        result = subprocess.run(self.sbatch_command(batch, len(units)), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"sbatch failed: {result.stderr.strip()}")
        job = result.stdout.strip().split(";")[0]
        self.jobs[job] = dict(enumerate(units))

    def _states(self, job: str) -> dict[int, str]:
        result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", "%i %T"], capture_output=True,
                                text=True)
        states = {}
        for line in result.stdout.split("\n"):
            if "_" in line:
                task, _, state = line.partition(" ")
                task_id = task.split("_", 1)[1]
                if task_id.isdigit():
                    states[int(task_id)] = state.strip()
        return states

    def outcome(self, unit: Unit) -> str:
        """What a unit whose job ended did, read from the database (the job leaves nothing else behind)."""
        if claims.completed_run(self.db, unit.experiment, unit.condition, unit.science) is not None:
            return COMPLETED
        claim = claims.get(self.db, [unit.condition]).get(unit.condition)
        if claim is None or claim.get("token", "").split("@")[0] != unit.token:
            return HELD  # somebody else holds the point, or the job ended before it claimed anything
        if claim["state"] == claims.RUNNING:
            # Slurm ended the job and every process of it: the claim and its run are dead, known for sure
            claims.release(self.db, unit.condition, claim["token"], claims.FAILED, dead=True)
            return LOST
        return FAILED

    def finished(self, timeout: float) -> list[tuple[Unit, str]]:
        time.sleep(timeout)
        out = []
        for job, tasks in list(self.jobs.items()):
            states = self._states(job)
            for task, unit in list(tasks.items()):
                if task not in states or states[task] in self.ENDED:
                    del tasks[task]
                    out.append((unit, self.outcome(unit)))
            if not tasks:
                del self.jobs[job]
        return out

    def running(self) -> int:
        return sum(len(tasks) for tasks in self.jobs.values())

    def detach(self) -> None:
        self.jobs.clear()


def main(argv=None) -> int:
    """A Slurm array task: ``python -m experiments.executors BATCH.json`` runs unit $SLURM_ARRAY_TASK_ID."""
    parser = Parser(prog="python -m experiments.executors",
                    description="Run one unit of a sweep's batch: the Slurm array task $SLURM_ARRAY_TASK_ID's.")
    parser.add_argument("batch", type=Path, help="the batch file the sweep wrote (batch_NNN.json)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    units = json.loads(args.batch.read_text())
    unit = Unit(**units[int(os.environ["SLURM_ARRAY_TASK_ID"])])
    outcome = run_unit(unit)
    print(f"unit {unit.index} ({unit.label()}): {outcome}")
    return 1 if outcome == FAILED else 0
