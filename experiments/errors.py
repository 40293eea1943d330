"""Errors a user can make, reported as one clear line (no traceback) by Sacred's command line."""

from __future__ import annotations

from typing import Iterable

from sacred.utils import SacredError

from ticketlab import params


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
    check(key, value, params.choice(tuple(choices)))


def check_number(key: str, value, *, low=None, high=None, integer=False, low_open=False, high_open=False,
                 allow_none=False) -> None:
    """Check that ``value`` is a number (an int if ``integer``) in the given range; None only if ``allow_none``."""
    check(key, value, params.number(low, high, integer=integer, low_open=low_open, high_open=high_open,
                                    none=allow_none))


def check(key: str, value, rule: params.Check) -> None:
    """``rule``'s check of ``value`` as a ConfigError (one line: the key, the value, the valid choices)."""
    try:
        rule.check(key, value)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_declared(prefix: str, values: dict, declared) -> None:
    """Every declared parameter's check (``ticketlab.params``) on ``values``, as a ConfigError."""
    try:
        params.check_all(prefix, values, declared)
    except ValueError as error:
        raise ConfigError(str(error)) from None
