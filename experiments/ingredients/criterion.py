"""The ``criterion`` ingredient: the mask criterion and the per-round prune rate of each layer role."""

from sacred import Ingredient

from experiments.errors import ConfigError
from experiments.ingredients import declare
from experiments.ingredients.arch import arch_ingredient, spec
from masking import lottery
from masking.training import TrainingConfig
from ticketlab.params import Param, number, params

criterion_ingredient = Ingredient("criterion", ingredients=[arch_ingredient])  # rate defaults from the arch


# the per-round prune fraction of each layer role (the procedure's role_rates): role -> (its layers, the paper's)
ROLES = {"fc": ("fc", "0.2"), "output": ("output-layer", "0.1"), "conv": ("conv", "0.1; conv6 0.15")}
RATES = [Param(f"{role}_rate", None, f"fraction of alive {what} weights pruned per round; None: the paper's ({paper})",
               number(low=0, high=1, high_open=True, none=True)) for role, (what, paper) in ROLES.items()]
declare(criterion_ingredient, params(lottery.LotterySpec, "criterion", "sources", "source_iteration") + RATES)


@criterion_ingredient.config_hook
def resolve(config, command_name, logger):
    cfg, arch = config["criterion"], spec(config)
    updates = {}
    for role in ROLES:
        key = f"{role}_rate"
        if cfg[key] is None:
            updates[key] = arch.rates.get(role)  # stays None for an fc-only net's conv_rate
        elif arch.rates.get(role) is None:
            raise ConfigError(f"criterion.{key}={cfg[key]!r} does not apply to arch {config['arch']['name']}: "
                              f"it has no {role} layers; rates it takes: "
                              f"{', '.join(f'criterion.{r}_rate' for r in arch.rates)}")
    training = config.get("training", {})
    try:
        sources = lottery.parse_sources(cfg["source"])
    except ValueError as error:
        raise ConfigError(f"criterion.source={cfg['source']!r} is not valid: {error}") from None
    try:
        lottery.check_source_iteration(sources, cfg["source_iteration"], TrainingConfig(
            iterations=training.get("iterations") or arch.iterations, lr=1.0, eval_every=training.get("eval_every", 1)))
    except ValueError as error:
        raise ConfigError(f"criterion.source_iteration={cfg['source_iteration']!r} is not valid: {error}") from None
    return updates


@criterion_ingredient.capture
def role_rates(_config) -> dict[str, float]:
    """The per-round prune fraction of each layer role the config sets."""
    return {role: _config[f"{role}_rate"] for role in ROLES if _config[f"{role}_rate"] is not None}

