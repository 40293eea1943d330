"""One Sacred ingredient per component. Each has documented config (shown by ``print_config``), a ``fast`` named
config for smoke tests, a config hook that validates its values (and fills ``None`` defaults from the arch) before
any run starts, and ``@capture``d builders. An ingredient whose config hook reads another ingredient's config
declares it (``Ingredient(name, ingredients=[arch_ingredient])``), so the order of an experiment's list does not
matter.

An ingredient's settings are declared once, as parameters (``ticketlab.params``): the procedure dataclasses' fields
or the ingredient's own ``Param``s. ``declare`` makes them its config, with their help as ``print_config``'s
documentation, and checks every value before a run starts."""

from __future__ import annotations

from sacred import Experiment
from sacred.config.config_summary import ConfigSummary
from sacred.config.utils import dogmatize, normalize_or_die, recursive_fill_in, undogmatize

from experiments.errors import check_declared
from ticketlab.params import Param, number

# the seed, set by Sacred (an experiment's top level): its check (what Sacred and numpy take) and help
SEED = Param("seed", None, "the run's seed: initial weights, data order, tie-breaking and every random treatment",
             number(0, 2**32 - 1, integer=True))


class DeclaredConfig:
    """A Sacred configuration made of declared parameters: their values (a callable default computed each time,
    like a config function's line) and their help as the documentation ``print_config`` shows."""

    def __init__(self, declared: list[Param], docs: dict[str, str]):
        self.declared, self.docs = declared, docs

    def __call__(self, fixed=None, preset=None, fallback=None):
        result = dogmatize(fixed or {})
        recursive_fill_in(result, normalize_or_die({p.key: p.value() for p in self.declared}))
        recursive_fill_in(result, preset or {})
        summary = ConfigSummary(result.revelation(), result.modified, result.typechanges,
                                docs={**self.docs, **{p.key: p.doc() for p in self.declared}})
        summary.update(undogmatize(result))
        return summary


def declare(ingredient, declared: list[Param]) -> list[Param]:
    """Make ``declared`` the config of ``ingredient`` (or of an experiment's top level, with the seed's help;
    documented) and check their values before any run (None passes where a parameter's check allows it: a later
    hook derives it)."""
    top = isinstance(ingredient, Experiment)  # an experiment's own settings sit at the top of the config
    ingredient.configurations.append(DeclaredConfig(declared, {SEED.key: SEED.doc()} if top else {}))

    def check(config, command_name, logger):
        check_declared("" if top else ingredient.path, config if top else config[ingredient.path], declared)
        return {}

    ingredient.config_hook(check)
    return declared


def declared_of(ingredient) -> list[Param]:
    """The parameters ``declare`` made ``ingredient``'s config."""
    return [p for config in ingredient.configurations if isinstance(config, DeclaredConfig) for p in config.declared]
