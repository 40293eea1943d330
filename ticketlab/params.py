"""Parameters declared once: a field of a procedure's dataclass (``masking.lottery.LotterySpec``,
``masking.training.TrainingConfig``, ``masking.supermask_training.SupermaskSpec``) carries its default, its one-line
help and the values it takes (``param``); a Sacred ingredient's config, ``print_config``'s documentation and the
config's validation derive from it (``experiments.ingredients.declare``). A setting with no procedure field (where
the data lives, how a run executes) is a ``Param`` in its ingredient, declared the same way.

    rounds: int = param(24, "pruning rounds after the dense round 0", number(low=0, integer=True))

Adding a hyper-parameter is that one field (and, where the procedure uses it, the line that does). Help text may
name ``{choices}``: the valid values, read from the registry when shown, so a plugin's entries appear.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

MISSING = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Check:
    """The values a parameter takes: one of ``choices`` (names, or a callable giving a registry's names), or a
    number (an integer if ``integer``) in a range; None too where ``none``. ``check`` raises a ValueError of one line
    that names the key, the value and the valid choices."""

    choices: tuple | Callable[[], Iterable[str]] | None = None
    integer: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    none: bool = False
    flag: bool = False

    def names(self) -> list:
        return list(self.choices() if callable(self.choices) else self.choices or ())

    def check(self, key: str, value) -> None:
        if value is None and self.none:
            return
        if self.flag:
            if not isinstance(value, bool):
                raise ValueError(f"{key}={value!r} is not valid; valid choices: True, False")
        elif self.choices is not None:
            if value not in self.names():
                raise ValueError(f"{key}={value!r} is not valid; valid choices: {', '.join(map(str, self.names()))}")
        else:
            kinds = (int,) if self.integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                kind = "an integer" if self.integer else "a number"
                raise ValueError(f"{key}={value!r} is not valid; it must be {kind}")
            low, high = self.low, self.high
            if (low is not None and (value <= low if self.low_open else value < low)) or \
                    (high is not None and (value >= high if self.high_open else value > high)):
                lo = "(-inf" if low is None else f"{'(' if self.low_open else '['}{low}"
                hi = "inf)" if high is None else f"{high}{')' if self.high_open else ']'}"
                raise ValueError(f"{key}={value!r} is out of range; valid range: {lo}, {hi}")


def choice(names: tuple | Callable[[], Iterable[str]], none: bool = False) -> Check:
    return Check(choices=names, none=none)


def number(low=None, high=None, *, integer=False, low_open=False, high_open=False, none=False) -> Check:
    return Check(integer=integer, low=low, high=high, low_open=low_open, high_open=high_open, none=none)


FLAG = Check(flag=True)


@dataclasses.dataclass(frozen=True)
class Param:
    """One setting as a config shows it: its key, default (a callable: computed when the config is made), help and
    check."""

    key: str
    default: Any
    help: str
    check: Check | None = None
    owner: type | None = None  # the dataclass whose field it is (None: a setting of the ingredient's own)
    field: str | None = None  # that field's name
    parse: Callable[[Any], Any] | None = None  # the field's value of a config value, where they differ

    def value(self):
        return self.default() if callable(self.default) else self.default

    def doc(self) -> str:
        return self.help.replace("{choices}", ", ".join(map(str, self.check.names()))) if self.check else self.help


def param(default=MISSING, help: str = "", check: Check | None = None, *, key: str | None = None,
          config=MISSING, parse: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field declaring a parameter: its default (none: the field is required), one-line help and check.
    ``key``: its config key when the config names it otherwise (``criterion.name`` for ``criterion``); ``config``:
    its config value when that differs from the field's default (None where the config derives it from the arch,
    a string where the field holds a parsed value, which ``parse`` makes of it)."""
    return dataclasses.field(default=default, metadata={"param": (help, check, key, config, parse)})


def params(cls: type, *names: str) -> list[Param]:
    """The ``Param`` of each of ``cls``'s fields named (all its declared ones when none are), in that order."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "param" in f.metadata}
    missing = [name for name in names if name not in fields]
    if missing:
        raise KeyError(f"{cls.__name__} declares no parameter {', '.join(missing)}; it declares {', '.join(fields)}")
    out = []
    for name in names or fields:
        help, check, key, config, parse = fields[name].metadata["param"]
        out.append(Param(key or name, fields[name].default if config is MISSING else config, help, check, cls, name,
                         parse))
    return out


def field_values(declared: Iterable[Param], values: dict, owner: type | None = None) -> dict:
    """{field name: value} of the declared parameters of ``owner`` (any dataclass when None) read from a config's
    ``values`` (parsed where the field holds a parsed value): the keyword arguments that build the dataclass."""
    return {p.field: p.parse(values[p.key]) if p.parse else values[p.key] for p in declared
            if p.owner is not None and (owner is None or p.owner is owner)}


def default(cls: type, name: str):
    """The default of field ``name`` of ``cls`` (e.g. where a paper config falls back to it)."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def check_all(prefix: str, values: dict, declared: Iterable[Param]) -> None:
    """Check each declared parameter's value in ``values`` (a ValueError of one line for the first bad one)."""
    for p in declared:
        if p.check is not None and p.key in values:
            p.check.check(f"{prefix}.{p.key}" if prefix else p.key, values[p.key])
