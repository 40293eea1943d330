"""The ``criterion`` ingredient: the mask criterion and the per-round prune rate of each layer role."""

from sacred import Ingredient

from experiments.errors import ConfigError, check_choice, check_number
from experiments.ingredients import default
from experiments.ingredients.arch import arch_ingredient, spec
from masking import criteria, lottery
from masking.training import TrainingConfig

criterion_ingredient = Ingredient("criterion", ingredients=[arch_ingredient])  # rate defaults from the arch


@criterion_ingredient.config
def config():
    name = default(lottery.LotterySpec, "criterion")  # mask criterion: which weights a round keeps (11 choices, see docs/protocol.md)
    fc_rate = None  # fraction of alive fc weights pruned per round; None: the paper's (0.2)
    output_rate = None  # fraction of alive output-layer weights pruned per round; None: the paper's (0.1)
    conv_rate = None  # fraction of alive conv weights pruned per round; None: the paper's (0.1; conv6 0.15)
    # which two weight states of the previous round the criterion scores (as its init and final weights), <a>_<b>
    # with a, b in init, final, best (minimum validation loss), iter (the weights after source_iteration steps):
    # init_final (the paper's), init_best, iter_final, init_iter
    source = "_".join(default(lottery.LotterySpec, "sources"))
    source_iteration = None  # the step t of the iter state: an evaluation step (a multiple of training.eval_every)


@criterion_ingredient.config_hook
def resolve(config, command_name, logger):
    cfg, arch = config["criterion"], spec(config)
    check_choice("criterion.name", cfg["name"], criteria.names())
    updates = {}
    for role in ("fc", "output", "conv"):
        key = f"{role}_rate"
        if cfg[key] is None:
            updates[key] = arch.rates.get(role)  # stays None for an fc-only net's conv_rate
        else:
            check_number(f"criterion.{key}", cfg[key], low=0, high=1, high_open=True)
            if arch.rates.get(role) is None:
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
def role_rates(fc_rate, output_rate, conv_rate) -> dict[str, float]:
    """The per-round prune fraction of each layer role the config sets."""
    given = {"fc": fc_rate, "output": output_rate, "conv": conv_rate}
    return {role: rate for role, rate in given.items() if rate is not None}

