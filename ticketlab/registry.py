"""A name -> object registry whose lookups fail with the bad name and the valid choices.

Every extension point of ticketlab is one, with one registration per entry: mask criteria, mask-1 and mask-0
actions, criterion sources and optimizers (``masking``), architectures and their families (``masking.models``),
data sets (``experiments.datasets``), experiment kinds (``ticketlab.kinds``) and executors
(``experiments.executors``). Config values name entries as plain strings.

Entries of one's own, outside the package: ``$TICKETLAB_PLUGINS`` names modules (comma-separated, importable from
``PYTHONPATH``) that register them. They are imported at the first lookup in any registry, in every process that
looks one up: a sweep's runs, a population, the analysis (they inherit the variable; a Dask worker or a Slurm job
needs it set where it starts). Their files count as science code (``ticketlab.identity``). docs/extending.md has
one worked example per registry.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Callable, Generic, TypeVar

T = TypeVar("T")
PLUGINS_VARIABLE = "TICKETLAB_PLUGINS"
_loaded: dict[str, list[str]] = {}  # the value of $TICKETLAB_PLUGINS -> the modules it named, once imported


class PluginError(ImportError):
    """A module ``$TICKETLAB_PLUGINS`` names cannot be imported; the message says which and why."""


def plugin_names() -> list[str]:
    return [name.strip() for name in os.environ.get(PLUGINS_VARIABLE, "").split(",") if name.strip()]


def load_plugins() -> list[str]:
    """Import the modules ``$TICKETLAB_PLUGINS`` names (once per value of the variable); their names."""
    value = os.environ.get(PLUGINS_VARIABLE, "")
    if value in _loaded:
        return _loaded[value]
    _loaded[value] = names = plugin_names()  # first: a plugin that looks a registry up does not load itself again
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            del _loaded[value]
            raise PluginError(f"${PLUGINS_VARIABLE} names {name!r}, which cannot be imported ({error}); give "
                              f"modules importable from PYTHONPATH, separated by commas") from None
    return names


def plugin_files() -> list[Path]:
    """The files of the plugin modules (loading them first): science code, as ``masking/`` is."""
    return [Path(sys.modules[name].__file__).resolve() for name in load_plugins()
            if getattr(sys.modules[name], "__file__", None)]


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what a name names, for messages: "mask criterion", "architecture", ...
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def names(self) -> list[str]:
        load_plugins()
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        load_plugins()
        return list(self._items.items())

    def get(self, name: str) -> T:
        load_plugins()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self._items)}") from None

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._items
