"""A MongoObserver that never loses a finished run, and the command that uploads runs it had to keep on disk.

Sacred's MongoObserver stops observing after its first failed write (metrics, artifact) and, when the final save
fails, pickles only the run document. ``ResilientMongoObserver`` instead keeps what it could not write (metrics,
artifacts copied to a spool) and, when the database is still down at the end of the run, writes a recovery
bundle to ``failure_dir``::

    <failure_dir>/<experiment>_<run id>_<UTC time>/
        run.pickle        the run document, as it would be stored (status COMPLETED/FAILED, info, config, ...)
        metrics.pickle    {name: {"steps": [...], "values": [...], "timestamps": [...]}}: every metric, in full
        artifacts.json    [{"name", "file", "metadata", "content_type"}] not yet stored; files beside it

``upload_failed_runs`` (``python -m experiments.upload -m HOST:PORT:DB``) writes the bundles into a database the
way the observer would have, and moves each uploaded bundle to ``<failure_dir>/uploaded/``.

With ``overwrite=RUN_ID`` (a resumed run, ``experiments.resume``) the observer continues that run's document: its
start time, info, artifacts and captured output stay (Sacred's own overwrite would clear them).
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import pickle
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import gridfs
import pymongo
import pymongo.errors
from sacred.observers import MongoObserver

from ticketlab import kinds, schema
from ticketlab.dbspec import DbSpec, connect, scrub, scrub_all

# how long one database call waits for an unreachable server (TICKETLAB_DB_TIMEOUT_MS overrides)
SERVER_TIMEOUT_MS = int(os.environ.get("TICKETLAB_DB_TIMEOUT_MS", "5000"))


def default_failure_dir() -> Path:
    """$TICKETLAB_FAILURE_DIR, else failed_runs in $TICKETLAB_HOME (default ~/.ticketlab)."""
    default = Path(os.environ.get("TICKETLAB_HOME", "~/.ticketlab")) / "failed_runs"
    return Path(os.environ.get("TICKETLAB_FAILURE_DIR") or default).expanduser()


class ResilientMongoObserver(MongoObserver):
    """MongoObserver with a ``failure_dir`` always set and nothing dropped while the database is unreachable."""

    def __init__(self, url: str | None = None, db_name: str = "sacred", failure_dir: str | Path | None = None,
                 **kwargs):
        if "client" not in kwargs:  # the client of dbspec.connect: journaled writes (see there), server timeout
            kwargs.setdefault("serverSelectionTimeoutMS", SERVER_TIMEOUT_MS)
            kwargs.setdefault("journal", True)
        super().__init__(url=url, db_name=db_name, failure_dir=str(failure_dir or default_failure_dir()), **kwargs)
        self.spec = DbSpec(url, db_name) if url else None  # for the upload command it prints (password scrubbed)
        self.pending_metrics: dict[str, dict[str, list]] = {}  # logged, not yet stored
        self.metric_history: dict[str, dict[str, list]] = {}  # everything logged, for a recovery bundle
        self.pending_artifacts: list[dict] = []
        self._spool: Path | None = None
        self.lost = False  # set when a finished run could be neither stored nor kept on disk
        # the document of the run this one continues, as it was before (Sacred edits self.overwrite in place)
        self.resumed_from: dict | None = copy.deepcopy(self.overwrite) if self.overwrite is not None else None

    # what a resumed run keeps of the document it continues
    KEPT_ON_RESUME = ("start_time", "info", "artifacts", "captured_out")

    def insert(self):
        if self.resumed_from is not None:  # called once, by the started event: restore before the first write
            for key in self.KEPT_ON_RESUME:
                if key in self.resumed_from:
                    self.run_entry[key] = copy.deepcopy(self.resumed_from[key])
            for key in ("stop_time", "fail_trace", "result"):
                self.run_entry.pop(key, None)
            # alive from its first write: with the start time kept and Sacred's heartbeat None until its first beat
            # (10 s), the document would look long dead to ``resume.is_stale`` (and be taken over) while it trains
            self.run_entry["heartbeat"] = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        return super().insert()

    # --------------------------------------------------------------- events that may meet a database that is down

    def log_metrics(self, metrics_by_name, info):
        for store in (self.pending_metrics, self.metric_history):
            _extend(store, metrics_by_name)
        try:
            self._flush_metrics(info)
        except pymongo.errors.PyMongoError:
            pass  # kept in pending_metrics; retried on the next heartbeat and at the end

    def _flush_metrics(self, info) -> None:
        if self.pending_metrics:
            super().log_metrics(self.pending_metrics, info)
            self.pending_metrics = {}

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        # a password given with -m never reaches the run document (Sacred records the options in meta)
        _id = super().started_event(ex_info, command, scrub_all(host_info), start_time, config,
                                    scrub_all(meta_info), _id)
        tags = self.tags(self.run_entry.get("config", {}), self.run_entry.get("experiment", {}).get("name"))
        self.run_entry["omniboard"] = {"tags": tags}
        self.runs.update_one({"_id": _id}, {"$set": {"omniboard.tags": tags}})
        return _id

    @staticmethod
    def tag_values(config: dict, experiment: str | None = "lottery") -> list[list[tuple[str, str | None]]]:
        """Per tag group of the run's kind (``ticketlab.kinds``; a run of no kind registered here: lottery's), the
        run's values as (text, short text or None)."""
        flat, groups = schema.flatten(config), []
        for group in (kinds.get(experiment) if experiment in kinds.KINDS else kinds.get("lottery")).tags:
            values = []
            for tag in group:
                if tag.when and flat.get(tag.when[0]) != tag.when[1]:
                    continue
                value = flat.get(tag.path) if tag.path else ""
                if value is not None and value is not False and not isinstance(value, (dict, list)):
                    values.append((tag.text.format(value), None if tag.short is None else tag.short.format(value)))
            groups.append(values)
        return groups

    @classmethod
    def tags(cls, config: dict, experiment: str | None = "lottery") -> list[str]:
        """A run's Omniboard tags: per tag group of its kind, its values joined by "/"; a group longer than
        ``schema.TAG_MAX_CHARS`` (longer tags are cut in Omniboard's Tags cell) takes its values' short forms one
        after the other until it fits, or becomes one tag per value when it has none."""
        tags = []
        for values in cls.tag_values(config, experiment):
            texts = [text for text, _ in values]
            shortened = [index for index, (_, short) in enumerate(values) if short is not None]
            for index in shortened:
                if len("/".join(filter(None, texts))) <= schema.TAG_MAX_CHARS:
                    break
                texts[index] = values[index][1]
            joined = "/".join(filter(None, texts))
            tags += texts if len(joined) > schema.TAG_MAX_CHARS and not shortened else [joined]
        return [tag for tag in tags if tag]

    def heartbeat_event(self, info, captured_out, beat_time, result):
        if self.resumed_from is not None:
            captured_out = (self.resumed_from.get("captured_out") or "") + captured_out
        try:
            super().heartbeat_event(info, captured_out, beat_time, result)
        except pymongo.errors.PyMongoError:
            pass  # the run entry is updated in memory; the final save writes it

    def artifact_event(self, name, filename, metadata=None, content_type=None):
        try:
            self._flush_artifacts()
            super().artifact_event(name, filename, metadata, content_type)
        except pymongo.errors.PyMongoError:
            if self._spool is None:
                self._spool = Path(tempfile.mkdtemp(prefix="ticketlab-spool-"))
            copy = self._spool / f"{len(self.pending_artifacts):04d}_{Path(name).name}"
            shutil.copyfile(filename, copy)
            self.pending_artifacts.append({"name": name, "file": str(copy), "metadata": metadata,
                                           "content_type": content_type})

    def _flush_artifacts(self) -> None:
        while self.pending_artifacts:
            item = self.pending_artifacts[0]
            MongoObserver.artifact_event(self, item["name"], item["file"], item["metadata"], item["content_type"])
            self.pending_artifacts.pop(0)

    def final_save(self, attempts):
        try:
            self._flush_metrics(self.run_entry.setdefault("info", {}))
            self._flush_artifacts()
            self.runs.replace_one({"_id": self.run_entry["_id"]}, self.run_entry, upsert=True)
        except pymongo.errors.PyMongoError as error:
            try:
                bundle = self.write_bundle()
            except OSError as disk_error:  # a failure folder that is not writable or full: say so, in one line
                self.lost = True
                print(f"ticketlab: run {self.run_entry['_id']} is LOST: the run database is unreachable "
                      f"({type(error).__name__}) and it cannot be kept in {self.failure_dir} ({disk_error}); "
                      f"nothing of it is marked finished",
                      file=sys.stderr)
                return
            print(f"ticketlab: the run database is unreachable ({type(error).__name__}); run "
                  f"{self.run_entry['_id']} is kept in {bundle}. Upload it later with: {self.upload_command()}",
                  file=sys.stderr)
            return
        if self._spool is not None:
            shutil.rmtree(self._spool, ignore_errors=True)

    def upload_command(self) -> str:
        """The command that uploads this run's bundle, as it can be run (a password in the URI shows as ***)."""
        spec = scrub(self.spec.uri_with_db) if self.spec else "DB_SPEC"
        return " ".join(shlex.quote(part) for part in (sys.executable, "-m", "experiments.upload", "-m", spec,
                                                      "--failure-dir", str(self.failure_dir)))

    def write_bundle(self) -> Path:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        experiment = self.run_entry.get("experiment", {}).get("name", "run")
        bundle = Path(self.failure_dir) / f"{experiment}_{self.run_entry['_id']}_{stamp}"
        partial = bundle.with_name(bundle.name + ".partial")
        try:
            self._write_bundle_files(partial)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # no half-written bundle left to fill a full disk further
            raise
        partial.rename(bundle)  # a bundle appears whole or not at all
        return bundle

    def _write_bundle_files(self, partial: Path) -> None:
        (partial / "artifacts").mkdir(parents=True, exist_ok=True)
        with open(partial / "run.pickle", "wb") as f:
            pickle.dump(self.run_entry, f)
        with open(partial / "metrics.pickle", "wb") as f:
            pickle.dump(self.metric_history, f)
        listed = []
        for item in self.pending_artifacts:
            target = partial / "artifacts" / Path(item["file"]).name
            shutil.move(item["file"], target)
            listed.append({**item, "file": f"artifacts/{target.name}"})
        (partial / "artifacts.json").write_text(json.dumps(listed, indent=1, default=str))


def _extend(store: dict[str, dict[str, list]], metrics_by_name: dict[str, dict[str, list]]) -> None:
    for name, values in metrics_by_name.items():
        series = store.setdefault(name, {"steps": [], "values": [], "timestamps": []})
        for key in series:
            series[key].extend(values[key])


# ------------------------------------------------------------------------------------------------ recovery


def failed_run_bundles(failure_dir: str | Path | None = None) -> list[Path]:
    root = Path(failure_dir or default_failure_dir()).expanduser()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "run.pickle").is_file()
                  and not p.name.endswith(".partial"))


def _millis(moment):
    """A datetime at BSON's precision (milliseconds), for comparing a stored time with one kept in memory."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000) if moment is not None else None


class BundleError(Exception):
    """A recovery bundle cannot be read (corrupted, half-written); it stays where it is."""


def read_bundle(bundle: Path) -> tuple[dict, dict, list[dict]]:
    """(run document, metrics, artifacts) of a bundle, every file checked before anything is written."""
    try:
        with open(bundle / "run.pickle", "rb") as f:
            entry = pickle.load(f)
        with open(bundle / "metrics.pickle", "rb") as f:
            metrics = pickle.load(f)
        artifacts = json.loads((bundle / "artifacts.json").read_text())
        missing = [item["file"] for item in artifacts if not (bundle / item["file"]).is_file()]
        if not isinstance(entry, dict) or "_id" not in entry or not isinstance(metrics, dict) or missing:
            raise ValueError(f"missing {', '.join(missing)}" if missing else "not a run bundle")
    except Exception as error:  # a truncated pickle raises anything from EOFError to UnpicklingError
        raise BundleError(f"recovery bundle {bundle} cannot be read ({type(error).__name__}: {error}); "
                          "it is kept as it is") from None
    return entry, metrics, artifacts


def upload_bundle(bundle: Path, database) -> int:
    """Write one recovery bundle into ``database`` (a pymongo Database); returns the run's _id there."""
    entry, metrics, artifacts = read_bundle(bundle)
    runs, fs = database["runs"], gridfs.GridFS(database)

    existing = runs.find_one({"_id": entry["_id"]}, {"start_time": 1, "experiment.name": 1})
    same_run = existing is not None and _millis(existing.get("start_time")) == _millis(entry.get("start_time")) \
        and existing.get("experiment", {}).get("name") == entry.get("experiment", {}).get("name")
    if existing is not None and not same_run:  # that id was taken by another run: append under a new id
        last = runs.find_one(sort=[("_id", pymongo.DESCENDING)], projection={"_id": 1})
        entry["_id"] = last["_id"] + 1
    # the bundle holds every metric in full: set the series (idempotent), then point info.metrics at them
    for name, series in metrics.items():
        database["metrics"].update_one({"run_id": entry["_id"], "name": name}, {"$set": series}, upsert=True)
    info = entry.setdefault("info", {})
    info["metrics"] = [{"name": doc["name"], "id": str(doc["_id"])}
                       for doc in database["metrics"].find({"run_id": entry["_id"]}, {"name": 1})]
    for item in artifacts:
        filename = f"artifact://runs/{entry['_id']}/{item['name']}"
        stored = database["fs.files"].find_one({"filename": filename}, {"_id": 1})  # uploaded before: not twice
        if stored is None:
            with open(bundle / item["file"], "rb") as f:
                file_id = fs.put(f, filename=filename, metadata=item["metadata"], content_type=item["content_type"])
        else:
            file_id = stored["_id"]
        entry.setdefault("artifacts", []).append({"name": item["name"], "file_id": file_id})
    runs.replace_one({"_id": entry["_id"]}, entry, upsert=True)
    return entry["_id"]


def upload_failed_runs(url: str, db_name: str, failure_dir: str | Path | None = None,
                       unreadable: list[str] | None = None) -> list[tuple[Path, int]]:
    """Upload every bundle in ``failure_dir``; each uploaded bundle moves to ``<failure_dir>/uploaded/``. A bundle
    that cannot be read stays; its one-line reason goes to ``unreadable`` (or is raised without it)."""
    bundles = failed_run_bundles(failure_dir)
    if not bundles:
        return []
    client = connect(url, serverSelectionTimeoutMS=SERVER_TIMEOUT_MS)
    database = client[db_name]
    done = []
    try:
        client.admin.command("ping")  # an unreachable database: refused before any bundle is read
        for bundle in bundles:
            try:
                run_id = upload_bundle(bundle, database)
            except BundleError as error:
                if unreadable is None:
                    raise
                unreadable.append(str(error))
                continue
            target = bundle.parent / "uploaded" / bundle.name
            target.parent.mkdir(exist_ok=True)
            shutil.move(str(bundle), target)
            done.append((target, run_id))
    finally:
        client.close()
    return done
