"""What every ticketlab Sacred experiment shares: settings, the observer upgrade, and run-record helpers.

* Host info without the CPU/GPU probes (they cost seconds per run), output captured in-process, and the captured
  output filtered like a terminal would show it (no progress-bar spam in the run document).
* ``-m HOST:PORT:DB``, ``-m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin`` (Sacred's own ``-m`` takes
  only the first form), or ``$TICKETLAB_MONGO_URI`` when a command line gives no ``-m``, attaches a
  ``ResilientMongoObserver`` (``ticketlab.dbspec``). The password never reaches the run document: the recorded
  option is scrubbed. An unreachable database stops the run before it starts, in one line. Observers are
  attached only from the command line: library calls (``ex.run(...)``) and tests choose their own.
* ``--resume RUN_ID`` (experiments of a resumable kind, ``ticketlab.kinds``) continues a run that died, in its own document,
  with its stored config (``experiments.resume``).
* SIGTERM, like Ctrl-C, interrupts a run: Sacred records it INTERRUPTED instead of leaving it RUNNING.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pymongo.errors
import torch
from sacred import SETTINGS, Experiment
from sacred.commandline_options import cli_option
from sacred.utils import ConfigAddedError, apply_backspaces_and_linefeeds

from experiments import resume
from experiments import errors
from experiments.errors import ConfigError, RunDatabaseError
from experiments.ingredients import SEED
from experiments.observers import ResilientMongoObserver
from masking import models
from masking.lottery import LotterySpec
from masking.training import TrainingConfig
from ticketlab import dbspec, identity, kinds
from ticketlab.params import default

SETTINGS.HOST_INFO.INCLUDE_GPU_INFO = False
SETTINGS.HOST_INFO.INCLUDE_CPU_INFO = False
SETTINGS.CAPTURE_MODE = "sys"


@cli_option("-R", "--resume")
def resume_option(args, run):
    """Continue run RUN_ID of the -m database from its last finished round, with its stored config (only execution
    settings such as training.threads or data.root may be given with 'with')."""
    # the work happens in TicketlabExperiment._create_run: the stored config must be known before the run is made


@cli_option("-Z", "--other-science", is_flag=True)
def other_science_option(args, run):
    """With --resume: continue the run although the science code (masking/, the data sets) changed since it
    started; its rounds then mix two science versions (each recorded in info.segments)."""


@contextlib.contextmanager
def sigterm_interrupts():
    """While the block runs (in the main thread), SIGTERM raises KeyboardInterrupt, once, as Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interrupt: the run's final save must not be cut short
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class TicketlabExperiment(Experiment):
    """The Sacred experiment of a kind (``ticketlab.kinds``: its name, and whether its runs resume)."""

    def __init__(self, kind: str, ingredients=()):
        self.kind = kinds.get(kind)
        super().__init__(kind, ingredients=list(ingredients),
                         additional_cli_options=[resume_option, other_science_option] if self.kind.resumable else None)
        self.captured_out_filter = apply_backspaces_and_linefeeds
        self.checks = []  # check(config, database or None) before a run starts: a ConfigError stops it, unwritten

    def run(self, *args, **kwargs):
        with sigterm_interrupts():
            return super().run(*args, **kwargs)

    def run_commandline(self, argv=None):
        self._command_line = True  # $TICKETLAB_MONGO_URI applies to command lines only
        try:
            run = super().run_commandline(argv)
            if run is not None and any(getattr(o, "lost", False) for o in run.observers):
                sys.exit(1)  # the run finished but could be neither stored nor kept: not a success
            return run
        except KeyboardInterrupt:
            run = self.current_run
            options = run.meta_info.get("options", {}) if run else {}
            hint = ""
            if run is not None and run._id is not None and options.get("--mongo_db") and self.kind.resumable:
                command = resume.resume_command(run._id, options["--mongo_db"], experiment=self.path)
                hint = f"; continue it with: python {' '.join(command[1:])}"
            print(f"ticketlab: run {run._id if run else ''} INTERRUPTED{hint}", file=sys.stderr)
            sys.exit(130)
        finally:
            self._command_line = False

    def _create_run(self, command_name=None, config_updates=None, named_configs=(), info=None, meta_info=None,
                    options=None):
        options = dict(options or {})
        spec = options.pop("--mongo_db", None)  # ours to parse: Sacred's parser takes HOST:PORT:DB only
        if not spec and getattr(self, "_command_line", False) and os.environ.get(dbspec.URI_VARIABLE) and \
                command_name not in ("print_config", "print_dependencies", "save_config"):
            spec = os.environ[dbspec.URI_VARIABLE]
        resume_id = options.get(resume.RESUME_FLAG)
        seed = (config_updates or {}).get("seed")
        if seed is not None:
            errors.check("seed", seed, SEED.check)
        if resume_id:
            doc = resume.stored_run(spec, resume_id)
            config_updates, info = resume.prepare(self.path, doc, config_updates, named_configs,
                                                  other_science=bool(options.get(resume.OTHER_SCIENCE_FLAG)))
        observer = self._observer(spec, overwrite=int(resume_id) if resume_id else None) if spec else None
        try:
            run = super()._create_run(command_name, config_updates, named_configs, info, meta_info, options)
        except ConfigAddedError as error:  # Sacred's message spans lines: one line naming the unknown keys
            raise ConfigError(f"unknown config key {', '.join(sorted(error.__conflicting_configs__))}; see the "
                              f"valid keys with: python -m {self.kind.module} print_config") from None
        if command_name in (None, self.default_command):
            for check in self.checks:  # before the run starts: nothing is written when one fails
                check(run.config, observer.runs.database if observer is not None else None)
        if observer is not None:
            run.meta_info["options"]["--mongo_db"] = dbspec.scrub(spec)
            run.observers.append(observer)
        _serialize_heartbeats(run)
        return run

    @staticmethod
    def _observer(spec: str, overwrite: int | None = None) -> ResilientMongoObserver:
        try:
            parsed = dbspec.parse(spec)
            observer = ResilientMongoObserver(**parsed.observer_kwargs(), overwrite=overwrite)
            observer.runs.database.client.admin.command("ping")
        except ValueError as error:
            raise RunDatabaseError(dbspec.scrub(error)) from None
        except pymongo.errors.PyMongoError as error:
            raise RunDatabaseError(dbspec.unreachable(parsed, error)) from None
        return observer


def kind_module(kind: str):
    """The module of a kind (``ticketlab.kinds``): its Sacred experiment ``ex`` and, when it trains in populations,
    what ``experiments.population`` asks of it."""
    return importlib.import_module(kinds.get(kind).module)


def experiment(kind: str) -> TicketlabExperiment:
    """The Sacred experiment of a kind (``ticketlab.kinds``)."""
    return kind_module(kind).ex


def _serialize_heartbeats(run) -> None:
    """Sacred's heartbeat thread and ``store_now`` (the main thread) both emit heartbeats: one at a time."""
    lock, emit = threading.Lock(), run._emit_heartbeat

    def locked():
        with lock:
            emit()

    run._emit_heartbeat = locked  # the heartbeat timer, started later by the run, calls this attribute


def store_now(run) -> None:
    """Write what ``run`` has logged (metrics, then info and captured output) to its observers now, not at Sacred's
    next heartbeat (every 10 s): a round printed as finished is in the database when it is printed, so a kill
    after the line loses nothing of it. A database that is down keeps it in the observer (stored later)."""
    run._emit_heartbeat()


def add_paper_configs(ex: Experiment, lottery: bool) -> None:
    """A named config per registered architecture (``masking.models.ARCHS``, its ``config_name``: ``paper_fc``,
    ``paper_conv2``, ``paper_conv4``, ``paper_conv6``, ``resnet20_cifar10``, and those of plugin families): the net,
    its data set and iterations; lottery runs also get its optimizer, rate and batch size (the paper's Adam at batch
    60; He et al.'s SGD at batch 128 for ResNet-20) and 24 rounds."""
    for arch, spec in models.ARCHS.items():
        config = {"arch": {"name": arch}, "data": {"name": spec.dataset}, "training": {"iterations": spec.iterations}}
        if lottery:
            config["training"].update(optimizer=spec.optimizer or default(TrainingConfig, "optimizer"), lr=spec.lr,
                                      batch_size=spec.batch_size or default(TrainingConfig, "batch_size"))
            config["pruning"] = {"rounds": default(LotterySpec, "rounds")}
        ex.add_named_config(spec.config_name, config)


def identity_info(run, config, execution: dict, data_source: str) -> dict:
    """What a run records of its identity (``ticketlab.identity``): ``condition``, ``point`` and ``science`` (the
    science version with the git commit and dirty flag), and ``segments``: one entry per start of the run (its
    execution info, data source, the round it continued after, the science version), so a run resumed on another
    device or by other code keeps what each part ran with. The science version of a run is that of its first
    segment: ``--resume`` refuses another one unless told (``experiments.resume``)."""
    info = run.info
    science = info.get("science") or identity.science_record()
    rounds = info.get("rounds") or []
    # copies: Sacred's serializer writes an object met twice in info as a reference ({"py/id": N})
    segment = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "after_round": rounds[-1]["round"] if rounds else None, "execution": dict(execution),
               "data_source": data_source, "science": identity.science_record()}
    return {"condition": identity.condition_hash(config), "point": identity.point_hash(config), "science": science,
            "segments": [*(info.get("segments") or []), segment]}


class ArtifactWriter:
    """Saves tensors to a temporary folder and hands them to Sacred as artifacts (observers copy them)."""

    def __init__(self, run):
        self.run = run
        self._dir = tempfile.TemporaryDirectory(prefix="ticketlab-artifacts-")

    def save(self, name: str, obj) -> None:
        path = Path(self._dir.name) / name
        torch.save(obj, path)
        self.run.add_artifact(str(path), name=name, content_type="application/x-pytorch")

    def close(self) -> None:
        self._dir.cleanup()
