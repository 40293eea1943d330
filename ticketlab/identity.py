"""What a result is, declared once: its condition, its point and the science version of the code that made it.

* **condition**: what a run computes, whatever executes it: the config minus the seed minus the execution keys
  (``ticketlab.schema.EXECUTION_KEYS``: device, threads, data root, ...), minus keys added after runs were stored
  when they hold the value those runs had (``schema.LATER_KEYS``). ``condition_hash(config)``. Runs of one condition
  with different seeds are the samples a statistical test compares.
* **point**: one seed of one condition, ``point_hash(config)``: what the sweep claims and skips when done. Two runs of
  one point (a rerun, a population member beside a single run, a CPU run beside a GPU run) are *replicas*: never two
  samples.
* **science version**: ``science_version()``, a hash of the science code (``SCIENCE_SOURCES``: the ``masking``
  package, ``experiments/datasets.py`` which reads, splits and scales the data, and the modules
  ``$TICKETLAB_PLUGINS`` names, which may add criteria, nets or data sets: ``ticketlab.registry``) with comments,
  docstrings and formatting left out (``normalized_source``: Python's syntax tree, so renaming a variable, changing
  a constant or any statement counts; a comment, a docstring, blank lines or line breaks do not). Every run records it
  (``info.science``, with the git commit and whether the checkout had uncommitted changes); runs of two science
  versions are different settings, never pooled, and the sweep does not count a point done by another version.

Each accepts a nested config (as Sacred stores it) or a flat one (``schema.flatten``): one implementation, so the
queries, the sweep, the claims and the runs' own records agree on every hash, for old documents and new.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import subprocess
from pathlib import Path
from typing import Mapping

from ticketlab.registry import plugin_files
from ticketlab.schema import EXECUTION_KEYS, LATER_KEYS, SEED_KEY, flatten

ROOT = Path(__file__).resolve().parent.parent
# the science code, relative to the repository: what computes a result from a config (folders: every .py below)
SCIENCE_SOURCES = ("masking", "experiments/datasets.py")
UNKNOWN_VERSION = "unknown"  # what a run made before ticketlab recorded science versions is treated as


def _flat(config: Mapping) -> dict:
    return dict(config) if all(not isinstance(v, Mapping) for v in config.values()) else flatten(config)


def condition_config(config: Mapping, with_seed: bool = False) -> dict:
    """The flat config that makes a condition (``with_seed``: a point): every config path but the execution keys,
    the seed, and later keys at the value earlier runs had."""
    skip = EXECUTION_KEYS | (set() if with_seed else {SEED_KEY})
    return {k: v for k, v in _flat(config).items()
            if k not in skip and not (k in LATER_KEYS and v == LATER_KEYS[k])}


def _hash(flat: dict) -> str:
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def condition_hash(config: Mapping) -> str:
    """The condition of a run's config (nested or flat): equal for its seeds, whatever executed them."""
    return _hash(condition_config(config))


def point_hash(config: Mapping) -> str:
    """The point of a run's config: its condition and its seed (what the sweep claims; ``info.point``)."""
    return _hash(condition_config(config, with_seed=True))


# ------------------------------------------------------------------------------------------ the science version


def _dump(node) -> str:
    """``ast.dump`` without positions, docstrings, and fields that are empty (so the syntax trees of Python 3.11 and
    3.12, which adds ``type_params``, dump the same for the same code)."""
    if isinstance(node, ast.AST):
        body = getattr(node, "body", None)
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if name == "body" and isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                                    ast.AsyncFunctionDef)) and body and _is_docstring(body[0]):
                value = body[1:]
            if value is None or value == []:
                continue
            fields.append(f"{name}={_dump(value)}")
        return f"{type(node).__name__}({', '.join(fields)})"
    if isinstance(node, list):
        return "[" + ", ".join(_dump(item) for item in node) + "]"
    return repr(node)


def _is_docstring(statement) -> bool:
    return isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) and \
        isinstance(statement.value.value, str)


def normalized_source(text: str) -> str:
    """The code of a Python source as the science version sees it: its syntax tree, without comments,
    docstrings, positions and formatting."""
    return _dump(ast.parse(text))


def science_files(root: Path = ROOT) -> list[Path]:
    """The science code: ``SCIENCE_SOURCES`` under ``root``, then the plugin modules' files."""
    files = []
    for source in SCIENCE_SOURCES:
        path = root / source
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files + plugin_files()


@functools.lru_cache(maxsize=None)
def science_version(root: Path = ROOT) -> str:
    """The science version of the code at ``root``: a hash over ``science_files``' normalized sources."""
    digest = hashlib.sha256()
    for path in science_files(root):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else f"plugin:{path.name}"
        digest.update(name.encode() + b"\0")
        digest.update(normalized_source(path.read_text()).encode() + b"\0")
    return digest.hexdigest()[:12]


def git_state(root: Path = ROOT) -> dict:
    """The git commit of the checkout and whether it has uncommitted changes (None, None outside git)."""
    def git(*args):
        try:
            result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def science_record(root: Path = ROOT) -> dict:
    """What a run records of the code that made it (``info.science``): the science version, the git commit and
    whether the checkout was dirty (the version, not the commit, decides whether two runs are the same setting)."""
    return {"version": science_version(root), **git_state(root)}


def version_of(doc: Mapping) -> str:
    """The science version a run document records (``UNKNOWN_VERSION`` for runs made before it was recorded)."""
    science = ((doc.get("info") or {}).get("science") or {})
    return science.get("version") or UNKNOWN_VERSION
