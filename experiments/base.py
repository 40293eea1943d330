"""What every ticketlab Sacred experiment shares: settings, the observer upgrade, and run-record helpers.

* Host info without the CPU/GPU probes (they cost seconds per run), output captured in-process, and the captured
  output filtered like a terminal would show it (no progress-bar spam in the run document).
* ``-m HOST:PORT:DB`` attaches a ``ResilientMongoObserver`` (Sacred's option builds a plain MongoObserver; it is
  swapped for ours, with the same arguments, before the run starts; ``-m DB`` with ``TICKETLAB_MONGO_URI`` set
  reaches an authenticated server). An unreachable database stops the run before it starts, in one line.
  Observers are attached only from the command line: library calls (``ex.run(...)``) and tests choose their own.
* ``--resume RUN_ID`` (experiments made with ``resumable=True``) continues a run that died, in its own document,
  with its stored config (``experiments.resume``).
* SIGTERM, like Ctrl-C, interrupts a run: Sacred records it INTERRUPTED instead of leaving it RUNNING.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pymongo.errors
import torch
from sacred import SETTINGS, Experiment
from sacred.commandline_options import cli_option
from sacred.observers import MongoObserver
from sacred.utils import ConfigAddedError, apply_backspaces_and_linefeeds

from experiments.dbspec import observer_kwargs
from experiments.errors import ConfigError, RunDatabaseError
from experiments.observers import ResilientMongoObserver
from experiments import resume
from masking import models

SETTINGS.HOST_INFO.INCLUDE_GPU_INFO = False
SETTINGS.HOST_INFO.INCLUDE_CPU_INFO = False
SETTINGS.CAPTURE_MODE = "sys"


@cli_option("-R", "--resume")
def resume_option(args, run):
    """Continue run RUN_ID of the -m database from its last finished round, with its stored config (only execution
    settings such as training.threads or data.root may be given with 'with')."""
    # the work happens in TicketlabExperiment._create_run: the stored config must be known before the run is made


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
    def __init__(self, name: str, ingredients=(), resumable: bool = False):
        super().__init__(name, ingredients=list(ingredients),
                         additional_cli_options=[resume_option] if resumable else None)
        self.captured_out_filter = apply_backspaces_and_linefeeds

    def run(self, *args, **kwargs):
        with sigterm_interrupts():
            return super().run(*args, **kwargs)

    def run_commandline(self, argv=None):
        try:
            run = super().run_commandline(argv)
            if run is not None and any(getattr(o, "lost", False) for o in run.observers):
                sys.exit(1)  # the run finished but could be neither stored nor kept: not a success
            return run
        except KeyboardInterrupt:
            run = self.current_run
            options = run.meta_info.get("options", {}) if run else {}
            hint = ""
            if run is not None and run._id is not None and options.get("--mongo_db") and \
                    any(o is resume_option for o in self.additional_cli_options):
                command = resume.resume_command(run._id, options["--mongo_db"], experiment=self.path)
                hint = f"; continue it with: python {' '.join(command[1:])}"
            print(f"ticketlab: run {run._id if run else ''} INTERRUPTED{hint}", file=sys.stderr)
            sys.exit(130)

    def _create_run(self, command_name=None, config_updates=None, named_configs=(), info=None, meta_info=None,
                    options=None):
        resume_id = (options or {}).get(resume.RESUME_FLAG)
        spec = (options or {}).get("--mongo_db")
        if spec:  # before Sacred parses it (it fails with a traceback on a spec it cannot match)
            try:
                observer_kwargs(spec)
            except ValueError as error:
                raise RunDatabaseError(str(error)) from None
        seed = (config_updates or {}).get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed={seed!r} is not valid; it must be an integer")
        if resume_id:
            doc = resume.stored_run((options or {}).get("--mongo_db"), resume_id)
            config_updates, info = resume.prepare(self.path, doc, config_updates, named_configs)
        try:
            run = super()._create_run(command_name, config_updates, named_configs, info, meta_info, options)
        except ConfigAddedError as error:  # Sacred's message spans lines: one line naming the unknown keys
            raise ConfigError(f"unknown config key {', '.join(sorted(error.__conflicting_configs__))}; see the valid "
                              f"keys with: python -m experiments.{self.path} print_config") \
                from None
        if spec:
            try:
                observer = ResilientMongoObserver(**observer_kwargs(spec), overwrite=int(resume_id) if resume_id
                                                  else None)
                observer.runs.database.client.admin.command("ping")
            except ValueError as error:
                raise RunDatabaseError(str(error)) from None
            except pymongo.errors.PyMongoError as error:
                raise RunDatabaseError(f"cannot reach the run database -m {spec} ({error.__class__.__name__}); "
                                       "start one with: python -m experiments.localdb start") from None
            run.observers = [observer if type(o) is MongoObserver else o for o in run.observers]
        return run


PAPER_CONFIG_NAMES = {"lenet300_100": "paper_fc", "conv2": "paper_conv2", "conv4": "paper_conv4",
                      "conv6": "paper_conv6"}


def add_paper_configs(ex: Experiment, lottery: bool) -> None:
    """Named configs ``paper_fc``, ``paper_conv2``, ``paper_conv4``, ``paper_conv6``: the paper's net, data set and
    iterations (from ``masking.models``' registry); lottery runs also get its Adam rate, batch 60 and 24 rounds."""
    for arch, name in PAPER_CONFIG_NAMES.items():
        spec = models.spec(arch)
        config = {"arch": {"name": arch}, "data": {"name": spec.dataset}, "training": {"iterations": spec.iterations}}
        if lottery:
            config["training"].update(lr=spec.lr, batch_size=60)
            config["pruning"] = {"rounds": 24}
        ex.add_named_config(name, config)


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
