"""What every ticketlab Sacred experiment shares: settings, the observer upgrade, and run-record helpers.

* Host info without the CPU/GPU probes (they cost seconds per run), output captured in-process, and the captured
  output filtered like a terminal would show it (no progress-bar spam in the run document).
* ``-m HOST:PORT:DB``, ``-m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin`` (Sacred's own ``-m`` takes
  only the first form), or ``$TICKETLAB_MONGO_URI`` when a command line gives no ``-m``, attaches a
  ``ResilientMongoObserver`` (``experiments.dbspec``). The password never reaches the run document: the recorded
  option is scrubbed. An unreachable database stops the run before it starts, in one line. Observers are
  attached only from the command line: library calls (``ex.run(...)``) and tests choose their own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pymongo.errors
import torch
from sacred import SETTINGS, Experiment
from sacred.utils import apply_backspaces_and_linefeeds

from experiments import dbspec
from experiments.errors import RunDatabaseError
from experiments.observers import ResilientMongoObserver
from masking import models

SETTINGS.HOST_INFO.INCLUDE_GPU_INFO = False
SETTINGS.HOST_INFO.INCLUDE_CPU_INFO = False
SETTINGS.CAPTURE_MODE = "sys"

class TicketlabExperiment(Experiment):
    def __init__(self, name: str, ingredients=()):
        super().__init__(name, ingredients=list(ingredients))
        self.captured_out_filter = apply_backspaces_and_linefeeds

    def run_commandline(self, argv=None):
        self._command_line = True  # $TICKETLAB_MONGO_URI applies to command lines only
        try:
            return super().run_commandline(argv)
        finally:
            self._command_line = False

    def _create_run(self, command_name=None, config_updates=None, named_configs=(), info=None, meta_info=None,
                    options=None):
        options = dict(options or {})
        spec = options.pop("--mongo_db", None)  # ours to parse: Sacred's parser takes HOST:PORT:DB only
        if not spec and getattr(self, "_command_line", False) and os.environ.get(dbspec.URI_VARIABLE) and \
                command_name not in ("print_config", "print_dependencies", "save_config"):
            spec = os.environ[dbspec.URI_VARIABLE]
        observer = self._observer(spec) if spec else None
        run = super()._create_run(command_name, config_updates, named_configs, info, meta_info, options)
        if observer is not None:
            run.meta_info["options"]["--mongo_db"] = dbspec.scrub(spec)
            run.observers.append(observer)
        return run

    @staticmethod
    def _observer(spec: str) -> ResilientMongoObserver:
        try:
            parsed = dbspec.parse(spec)
            observer = ResilientMongoObserver(**parsed.observer_kwargs())
            observer.runs.database.client.admin.command("ping")
        except ValueError as error:
            raise RunDatabaseError(dbspec.scrub(error)) from None
        except pymongo.errors.PyMongoError as error:
            raise RunDatabaseError(dbspec.unreachable(parsed, error)) from None
        return observer


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
