"""``--executor local`` (the default): a pool of ``--workers`` slots on this machine, each slot bound to a device when
``--gpus`` gives them (``--gpus 0,1 --runs-per-gpu 2``: four slots, cuda:0, cuda:0, cuda:1, cuda:1); with
``--population K``, slots train populations (``PopulationExecutor``). ``--detach`` goes on as a background sweep."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import queue
import subprocess
import sys
from pathlib import Path

from experiments.executors.base import FutureExecutor, local_gpu_ids, register
from experiments.executors.units import LOST, Unit, population_command, run_group, run_unit
from ticketlab import dbspec


@register
class LocalExecutor(FutureExecutor):
    name = "local"
    help = "this machine, --workers runs at a time (with --gpus: --runs-per-gpu on each GPU)"
    populations = True

    def __init__(self, workers: int, devices: list[str] | None = None):
        super().__init__()
        self.pool = concurrent.futures.ThreadPoolExecutor(workers)
        self.slots: queue.Queue = queue.Queue()
        for device in devices or [None] * workers:
            self.slots.put(device)

    @classmethod
    def check(cls, args, parser) -> list[str] | None:
        if args.gpus is None:
            return None
        return [f"cuda:{i}" for i in local_gpu_ids(args, parser) for _ in range(args.runs_per_gpu)]

    @classmethod
    def describe(cls, args, devices: list[str] | None) -> str:
        return f"{len(devices) if devices else args.workers} workers x {args.threads} thread(s)" + \
            (f" on {', '.join(sorted(set(devices)))}" if devices else "")

    @classmethod
    def create(cls, args, db, logs: Path, devices: list[str] | None) -> "LocalExecutor":
        return cls(len(devices) if devices else args.workers, devices)

    @classmethod
    def create_population(cls, args, logs: Path, devices: list[str] | None, key) -> "PopulationExecutor":
        return PopulationExecutor(len(devices) if devices else args.workers, args.population, key, list(args.shared),
                                  args.threads, logs, devices)

    @classmethod
    def detach_sweep(cls, argv: list[str], sweep_id: str, logs: Path) -> str:
        """The same sweep as a background process in its own session, outliving this command."""
        command = [sys.executable, "-m", "experiments.sweep", "--sweep-id", sweep_id,
                   *[a for a in argv if a != "--detach"]]
        out = open(logs / "sweep.out", "ab")
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        return f"running in the background (pid {process.pid}; output in {logs / 'sweep.out'})"

    def _on_slot(self, unit: Unit) -> str:
        device = self.slots.get()
        try:
            return run_unit(dataclasses.replace(unit, device=device or unit.device))
        finally:
            self.slots.put(device)

    def submit(self, units: list[Unit]) -> None:
        for unit in units:
            self.futures[self.pool.submit(self._on_slot, unit)] = unit

    @staticmethod
    def _wait(futures, timeout):
        return concurrent.futures.wait(futures, timeout, return_when=concurrent.futures.FIRST_COMPLETED)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class PopulationExecutor(LocalExecutor):
    """``LocalExecutor`` whose slots train populations: submitted units are grouped by ``key`` (points that can share
    a population: ``experiments.population.group_key``) into populations of at most ``size``, each claimed point
    by point and trained in one process (``run_group``); the points a population cannot take (a run of them exists,
    a population of one) run as single units. A failed or lost member comes back to the sweep as a unit that is
    retried alone (it resumes)."""

    def __init__(self, workers: int, size: int, key, shared: list[str], threads: int, logs: Path,
                 devices: list[str] | None = None):
        super().__init__(workers, devices)
        self.size, self.key, self.shared, self.threads, self.logs = size, key, shared, threads, logs
        self.groups = 0

    def submit(self, units: list[Unit]) -> None:
        groups: dict[str, list[Unit]] = {}
        for unit in units:
            groups.setdefault(self.key(unit), []).append(unit)
        for members in groups.values():
            for start in range(0, len(members), self.size):
                chunk = members[start:start + self.size]
                if len(chunk) == 1:
                    super().submit(chunk)
                    continue
                log = self.logs / f"population_{self.groups:04d}.log"
                self.groups += 1
                self.futures[self.pool.submit(self._on_slot_group, chunk, log)] = chunk

    def _on_slot_group(self, units: list[Unit], log: Path) -> tuple[dict[int, str], list[Unit]]:
        device = self.slots.get()
        try:
            return run_group(units, lambda claimed: population_command(claimed, self.shared, self.threads, device),
                             str(log))
        finally:
            self.slots.put(device)

    def _outcomes(self, future, submitted: Unit | list[Unit]) -> list[tuple[Unit, str]]:
        if isinstance(submitted, Unit):  # a single unit
            return super()._outcomes(future, submitted)
        try:
            outcomes, alone = future.result()
        except Exception as error:  # noqa: BLE001  the population's own machinery failed: its points retry
            print(f"sweep: a population of {len(submitted)} lost: {type(error).__name__}: {dbspec.scrub(error)}",
                  file=sys.stderr)
            outcomes, alone = {unit.index: LOST for unit in submitted}, []
        for unit in alone:  # points with a run of their own: each alone, as run_unit does
            self.futures[self.pool.submit(self._on_slot, unit)] = unit
        return [(unit, outcomes[unit.index]) for unit in submitted if unit.index in outcomes]

    def running(self) -> int:
        return sum(1 if isinstance(s, Unit) else len(s) for s in self.futures.values())
