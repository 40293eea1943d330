"""What an executor is to the sweep, and the registry of executors (``--executor NAME``).

An executor moves units (``experiments.executors.units``): ``submit(units)``, then ``finished(timeout)`` hands back
``(unit, outcome)`` pairs, ``running()`` counts what it still has, ``detach()`` leaves it running, ``close()``. Its
class declares the rest, so the sweep names no executor: its own flags (``FLAGS``: given with another executor,
they are refused in one line), its checks of the command line (``check``: one line, before anything starts; it
returns the devices of this machine's slots, if it has any), how the sweep says where runs go (``describe``), how
it starts (``create``), whether it trains ``--population K`` populations (``populations``, ``create_population``)
and how a ``--detach`` sweep leaves (``detach_sweep``). One ``register(Executor)`` adds one (docs/extending.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from experiments.executors.units import LOST, Unit
from ticketlab import dbspec
from ticketlab.registry import Registry


class Executor:
    name = ""
    help = ""  # one line: where its units run
    FLAGS: tuple[tuple[str, dict], ...] = ()  # its own flags: (option, argparse keywords)
    populations = False  # trains --population K populations on this machine

    @classmethod
    def check(cls, args, parser) -> list[str] | None:
        """Refuse a bad command line in one line (``parser.error``); the devices of this machine's slots, or
        None."""
        return None

    @classmethod
    def describe(cls, args, devices: list[str] | None) -> str:
        """Where the runs go, for the sweep's first line (``... to run with <this>``)."""
        return cls.name

    @classmethod
    def create(cls, args, db, logs: Path, devices: list[str] | None) -> "Executor":
        raise NotImplementedError

    @classmethod
    def create_population(cls, args, logs: Path, devices: list[str] | None, key) -> "Executor":
        """With ``populations``: units grouped by ``key(unit)`` into populations of at most ``--population``."""
        raise NotImplementedError(f"--executor {cls.name} trains no populations")

    @classmethod
    def detach_sweep(cls, argv: list[str], sweep_id: str, logs: Path) -> str | None:
        """Leave a ``--detach`` sweep running by itself, and say how (None: submit the units, then ``detach``)."""
        return None

    def submit(self, units: list[Unit]) -> None:
        raise NotImplementedError

    def finished(self, timeout: float) -> list[tuple[Unit, str]]:
        raise NotImplementedError

    def running(self) -> int:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError(f"--executor {self.name} cannot be left running (--detach)")

    def close(self) -> None:
        pass


EXECUTORS: Registry[type[Executor]] = Registry("executor")


def register(executor: type[Executor]) -> type[Executor]:
    return EXECUTORS.add(executor.name, executor)


def add_arguments(parser) -> None:
    """``--executor`` and every executor's own flags (a group each)."""
    parser.add_argument("--executor", choices=EXECUTORS.names(), default="local",
                        help="where runs execute (default local): "
                             + "; ".join(f"{name}: {executor.help}" for name, executor in EXECUTORS.items()))
    for name, executor in EXECUTORS.items():
        if executor.FLAGS:
            group = parser.add_argument_group(f"--executor {name}")
            for option, keywords in executor.FLAGS:
                group.add_argument(option, **keywords)


def chosen(args, parser) -> type[Executor]:
    """The executor ``args`` name; another executor's flags are refused in one line."""
    executor = EXECUTORS.get(args.executor)
    for name, other in EXECUTORS.items():
        given = [option for option, keywords in other.FLAGS
                 if getattr(args, _dest(option, keywords)) not in (None, [], False)]
        if name != args.executor and given:
            options = [option for option, _ in other.FLAGS]
            listed = options[0] if len(options) == 1 else f"{', '.join(options[:-1])} and {options[-1]}"
            parser.error(f"{listed} appl{'ies' if len(options) == 1 else 'y'} to --executor {name}, not "
                         f"{args.executor}")
    return executor


def _dest(option: str, keywords: dict) -> str:
    return keywords.get("dest") or option.lstrip("-").replace("-", "_")


def gpu_ids(spec: str, count: int) -> list[int]:
    """The GPU ids ``--gpus`` names (``0,1`` or ``all``) on a machine with ``count`` GPUs; a ValueError in one line
    naming the valid choices otherwise."""
    valid = f"valid: 0..{count - 1} or all" if count else "no CUDA device on this machine"
    try:
        ids = list(range(count)) if spec == "all" else [int(i) for i in spec.split(",")]
    except ValueError:
        ids = None
    if not ids or any(not 0 <= i < count for i in ids):
        raise ValueError(f"--gpus {spec!r} names no usable GPU ({valid})")
    return ids


def local_gpu_ids(args, parser) -> list[int]:
    """This machine's GPUs that ``--gpus`` names (one line and exit otherwise)."""
    import torch

    try:
        return gpu_ids(args.gpus, torch.cuda.device_count())
    except ValueError as error:
        parser.error(str(error))


class FutureExecutor(Executor):
    """The executors whose units are futures (concurrent.futures or Dask): ``self.futures`` maps each to what it
    runs, ``_wait`` waits for the first to finish, ``_outcomes`` says what a finished one did."""

    def __init__(self):
        self.futures: dict = {}

    def finished(self, timeout: float) -> list[tuple[Unit, str]]:
        if not self.futures:
            time.sleep(timeout)
            return []
        done, _ = self._wait(list(self.futures), timeout)
        return [pair for future in done for pair in self._outcomes(future, self.futures.pop(future))]

    def _outcomes(self, future, unit: Unit) -> list[tuple[Unit, str]]:
        """What a finished future's units did."""
        try:
            return [(unit, future.result())]
        except Exception as error:  # noqa: BLE001  a lost worker (KilledWorker) or a crash of run_unit
            print(f"sweep: unit {unit.index} ({unit.label()}) lost: {error.__class__.__name__}: {dbspec.scrub(error)}",
                  file=sys.stderr)
            return [(unit, LOST)]

    def running(self) -> int:
        return len(self.futures)
