"""Continue a lottery run that died (SIGKILL, SIGTERM, a lost machine) from its last finished round, into the same
run document.

    python -m experiments.lottery -m HOST:PORT:DB --resume 7
    python -m experiments.lottery -m HOST:PORT:DB --resume 7 with training.threads=1 data.root=/data
    ticketlab resume -m HOST:PORT:DB 7 [with training.threads=1]      # the same, whatever experiment made run 7

The resumed run takes the config stored in run 7; only execution settings (``ticketlab.schema.EXECUTION_KEYS``:
data root, threads) may be given with ``with``. Sacred's ``MongoObserver(overwrite=7)`` writes into the same
document; ``ResilientMongoObserver`` keeps its info, artifacts and captured output. A round is finished when the
document lists it in ``info.rounds`` (the experiment stores a round's metrics and artifact before its record, so
such a round is whole). The run restarts at the first unfinished round from the stored initial weights and the
last finished round's ``round_XX.pt`` (final weights and mask): on the CPU the rounds it then computes are
bit-identical to an uninterrupted run's. What an unfinished round had stored is removed first (metric steps,
artifacts), so every metric series ends up with exactly the steps of an uninterrupted run.

Refused in one line, before anything is written: a COMPLETED (or QUEUED) run, a run of another experiment, a run
started with ``save_artifacts=False`` (its weights were not stored), config changes other than execution settings.
A RUNNING run is taken to be dead: the caller checks that (the sweep with ``is_stale``).
"""

from __future__ import annotations

import copy
import datetime
import importlib
import io
import sys
from typing import Callable, Iterable, Mapping, Sequence

import pymongo
import torch

from experiments.errors import UserError
from experiments.observers import SERVER_TIMEOUT_MS
from ticketlab import dbspec, identity, kinds
from ticketlab.cli import Parser, add_database
from ticketlab.schema import EXECUTION_KEYS

RESUME_FLAG = "--resume"
OTHER_SCIENCE_FLAG = "--other-science"
REFUSED_STATUSES = ("COMPLETED", "QUEUED")


class ResumeError(UserError):
    """A run cannot be resumed; the message says why."""


def resume_command(run_id: int, db_spec: str, updates: Sequence[str] = (), experiment: str = "lottery") -> list[str]:
    """The command that continues run ``run_id`` of database ``db_spec`` (``updates``: execution settings only,
    e.g. ``["training.threads=1"]``)."""
    command = [sys.executable, "-m", kinds.get(experiment).module, "-m", db_spec, RESUME_FLAG, str(int(run_id))]
    return command + (["with", *updates] if updates else [])


def is_stale(run_doc: Mapping, stale_after_s: float, now: datetime.datetime | None = None) -> bool:
    """True for a RUNNING run whose last heartbeat (or start, before the first heartbeat) is older than
    ``stale_after_s`` seconds: its process is taken to be dead. Times are UTC, as Sacred stores them."""
    if run_doc.get("status") != "RUNNING":
        return False
    last = run_doc.get("heartbeat") or run_doc.get("start_time")
    if last is None:
        return True
    now = now or datetime.datetime.now(datetime.timezone.utc)
    as_utc = lambda t: t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)  # noqa: E731
    return (as_utc(now) - as_utc(last)).total_seconds() > stale_after_s


def _leaves(tree: Mapping, path=()) -> Iterable[tuple[str, ...]]:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            yield from _leaves(value, path + (key,))
        else:
            yield path + (key,)


def _merge(base: dict, updates: Mapping) -> dict:
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def stored_run(db_spec: str | None, run_id) -> dict:
    """The run document ``run_id`` of database ``db_spec``; a ResumeError if there is none."""
    if not db_spec:
        raise ResumeError(f"{RESUME_FLAG} needs the run database: add -m HOST:PORT:DB")
    try:
        run_id = int(run_id)
    except (TypeError, ValueError):
        raise ResumeError(f"{RESUME_FLAG} {run_id!r} is not valid; give a run id (an integer)") from None
    try:
        spec = dbspec.parse(db_spec)
    except ValueError as error:
        raise ResumeError(dbspec.scrub(error)) from None
    client = dbspec.connect(spec.url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    try:
        doc = client[spec.db_name]["runs"].find_one({"_id": run_id})
    except pymongo.errors.PyMongoError as error:
        raise ResumeError(dbspec.unreachable(spec, error)) from None
    finally:
        client.close()
    if doc is None:
        raise ResumeError(f"run {run_id} not found in -m {spec.display}")
    return doc


def prepare(experiment_name: str, doc: Mapping, config_updates: Mapping | None,
            named_configs: Sequence[str], other_science: bool = False) -> tuple[dict, dict]:
    """(config updates, info) that make a new run continue ``doc``: its stored config with the allowed execution
    updates, and its stored info. A ResumeError, before anything is written, when it cannot be resumed (a run
    started by another science version too, unless ``other_science``)."""
    run_id = doc["_id"]
    stored_experiment = doc.get("experiment", {}).get("name")
    if stored_experiment != experiment_name:
        raise ResumeError(f"run {run_id} is a {stored_experiment} run, not a {experiment_name} run")
    if doc.get("status") in REFUSED_STATUSES:
        raise ResumeError(f"run {run_id} is already {doc['status']}")
    if named_configs:
        raise ResumeError(f"{RESUME_FLAG} {run_id} takes the config stored in the run; named configs "
                          f"({', '.join(named_configs)}) cannot be added")
    changed = [".".join(path) for path in _leaves(config_updates or {}) if ".".join(path) not in EXECUTION_KEYS]
    if changed:
        allowed = ", ".join(sorted(EXECUTION_KEYS))
        raise ResumeError(f"{RESUME_FLAG} {run_id} takes the config stored in the run; only execution settings "
                          f"({allowed}) may be given, not {', '.join(changed)}")
    config = copy.deepcopy(doc.get("config", {}))
    if not config.get("save_artifacts", False):
        raise ResumeError(f"run {run_id} cannot be resumed: it ran with save_artifacts=False, so its weights "
                          "were not stored")
    stored, current = identity.version_of(doc), identity.science_version()
    if stored != current and not other_science:
        raise ResumeError(f"run {run_id} was started by science version {stored}, this code is {current} "
                          f"(masking/ or the data sets changed): its rounds would mix two versions; add "
                          f"{OTHER_SCIENCE_FLAG} to continue it anyway, or start a new run")
    return _merge(config, config_updates or {}), copy.deepcopy(doc.get("info", {}))


def load_tensors(data: bytes):
    """What ``torch.save`` wrote into an artifact, as CPU tensors whatever device saved them (a run trained on a
    GPU is resumed, or its masks read, on any machine)."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class Resumed:
    """The stored state of the run a resumed run continues, and the edits that drop an unfinished round."""

    def __init__(self, observer):
        self.observer = observer
        self.doc = observer.resumed_from  # the run document as it was before this process started

    @property
    def run_id(self) -> int:
        return self.doc["_id"]

    @property
    def artifact_names(self) -> list[str]:
        return [a["name"] for a in self.observer.run_entry.get("artifacts", [])]

    def load_artifact(self, name: str):
        """The tensors saved (``torch.save``) as artifact ``name``."""
        entry = next(a for a in self.observer.run_entry["artifacts"] if a["name"] == name)
        return load_tensors(self.observer.fs.get(entry["file_id"]).read())

    def keep_artifacts(self, names: Iterable[str]) -> None:
        """Drop every artifact not in ``names`` (from the run document and from GridFS)."""
        names = set(names)
        entries = self.observer.run_entry.get("artifacts", [])
        for entry in entries:
            if entry["name"] not in names:
                self.observer.fs.delete(entry["file_id"])
        self.observer.run_entry["artifacts"] = [a for a in entries if a["name"] in names]
        self.observer.save()

    def metric_steps(self) -> dict[str, set[int]]:
        """The steps stored for each metric of the run."""
        return {doc["name"]: set(doc["steps"]) for doc in self.observer.metrics.find({"run_id": self.run_id},
                                                                                      {"name": 1, "steps": 1})}

    def keep_metrics(self, keep: Callable[[str, int], bool]) -> None:
        """Drop the stored metric values whose (name, step) ``keep`` rejects; the kept series also go into the
        observer's history, so a recovery bundle written later holds the whole series."""
        metrics = self.observer.metrics
        for doc in metrics.find({"run_id": self.run_id}):
            rows = [row for row in zip(doc["steps"], doc["values"], doc["timestamps"]) if keep(doc["name"], row[0])]
            series = {"steps": [r[0] for r in rows], "values": [r[1] for r in rows],
                      "timestamps": [r[2] for r in rows]}
            if len(rows) != len(doc["steps"]):
                metrics.update_one({"_id": doc["_id"]}, {"$set": series})
            self.observer.metric_history[doc["name"]] = series


def resumed(run) -> Resumed | None:
    """The stored run this Sacred run continues (``--resume``), or None for a fresh run."""
    for observer in run.observers:
        if getattr(observer, "resumed_from", None) is not None:
            return Resumed(observer)
    return None


def main(argv=None) -> int:
    """``ticketlab resume -m DB RUN_ID [with ...]``: ``--resume RUN_ID`` of the experiment that made the run."""
    parser = Parser(prog="python -m experiments.resume", description="Continue a run that died from its last "
                    "finished round, in its own document (the experiment that made it, --resume RUN_ID).",
                    epilog="Anything after 'with' goes to the run: execution settings only (training.threads, ...).")
    add_database(parser)
    parser.add_argument("run_id", help="the run to continue (ticketlab runs lists them, and how to continue each)")
    parser.add_argument(OTHER_SCIENCE_FLAG, action="store_true",
                        help="continue it although the science code changed since it started")
    args = parser.parse_with(sys.argv[1:] if argv is None else argv)
    parser.database(args)
    try:
        kind = kinds.get(stored_run(args.mongo_db, args.run_id).get("experiment", {}).get("name"))
    except (ResumeError, ValueError) as error:
        parser.error(str(error))
    if not kind.resumable:
        parser.error(f"run {args.run_id} is a {kind.name} run: {kind.name} runs are not resumed (run it again)")
    experiment = importlib.import_module(kind.module).ex  # the kind's experiment: it imports this module
    experiment.run_commandline([
        f"python -m {kind.module}", "-m", args.mongo_db, RESUME_FLAG, args.run_id,
        *([OTHER_SCIENCE_FLAG] if args.other_science else []), *(["with", *args.shared] if args.shared else [])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
