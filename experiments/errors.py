"""Errors a user can make, reported as one clear line (no traceback) by Sacred's command line."""

from __future__ import annotations

from typing import Iterable

from sacred.utils import SacredError


class UserError(SacredError):
    """A mistake a user can fix, printed as one line by Sacred's command line (no traceback)."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


class ConfigError(UserError):
    """A bad config value: the message names the key, the value and the valid choices."""


class RunDatabaseError(UserError):
    """The run database given with -m cannot be used."""


class DataError(UserError):
    """A data set is missing: the message says which files to put where."""


class RunFailed(UserError):
    """A run that cannot go on (its loss diverged): FAILED, with this one line as the reason."""


def run_name(run) -> str:
    """``run 12`` (``the run`` when no database gave it an id)."""
    return f"run {run._id}" if run._id is not None else "the run"


def check_choice(key: str, value, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not valid; valid choices: {', '.join(choices)}")


def check_number(key: str, value, *, low=None, high=None, integer=False, low_open=False, high_open=False,
                 allow_none=False) -> None:
    """Check that ``value`` is a number (an int if ``integer``) in the given range; None only if ``allow_none``."""
    if value is None and allow_none:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(f"{key}={value!r} is not valid; it must be {'an integer' if integer else 'a number'}")
    bad = (low is not None and (value <= low if low_open else value < low)) or \
          (high is not None and (value >= high if high_open else value > high))
    if bad:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        raise ConfigError(f"{key}={value!r} is out of range; valid range: {lo or '(-inf'}, {hi or 'inf)'}")
