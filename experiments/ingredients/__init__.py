"""One Sacred ingredient per component. Each has documented config (shown by ``print_config``), a ``fast`` named
config for smoke tests, a config hook that validates its values (and fills ``None`` defaults from the arch) before
any run starts, and ``@capture``d builders. An ingredient whose config hook reads another ingredient's config
declares it (``Ingredient(name, ingredients=[arch_ingredient])``), so the order of an experiment's list does not
matter.

An ingredient's settings are declared once, as parameters (``ticketlab.params``): the procedure dataclasses' fields
or the ingredient's own ``Param``s. ``declare`` makes them its config, with their help as ``print_config``'s
documentation, and checks every value before a run starts."""

from __future__ import annotations

from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, normalize_or_die, recursive_fill_in, undogmatize

from experiments.errors import check_declared
from ticketlab.params import Param


class DeclaredConfig:
    """A Sacred configuration made of declared parameters: their values (a callable default computed each time,
    like a config function's line) and their help as the documentation ``print_config`` shows."""

    def __init__(self, declared: list[Param]):
        self.declared = declared

    def __call__(self, fixed=None, preset=None, fallback=None):
        result = dogmatize(fixed or {})
        recursive_fill_in(result, normalize_or_die({p.key: p.value() for p in self.declared}))
        recursive_fill_in(result, preset or {})
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges,
                                docs={p.key: p.doc() for p in self.declared})
        summary.update(undogmatize(result))
        return summary


def declare(ingredient, declared: list[Param]) -> list[Param]:
    """Make ``declared`` the config of ``ingredient`` (documented) and check their values before any run (None
    passes where a parameter's check allows it: a later hook derives it)."""
    ingredient.configurations.append(DeclaredConfig(declared))

    def check(config, command_name, logger):
        check_declared(ingredient.path, config[ingredient.path], declared)
        return {}

    ingredient.config_hook(check)
    return declared


def declared_of(ingredient) -> list[Param]:
    """The parameters ``declare`` made ``ingredient``'s config."""
    return [p for config in ingredient.configurations if isinstance(config, DeclaredConfig) for p in config.declared]
