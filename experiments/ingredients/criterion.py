"""The ``criterion`` ingredient: the mask criterion and the per-round prune rate of each layer role."""

from sacred import Ingredient

from experiments.errors import ConfigError, check_choice, check_number
from experiments.ingredients.arch import spec
from masking import criteria, pruning, trajectory

criterion_ingredient = Ingredient("criterion")


@criterion_ingredient.config
def config():
    name = "large_final"  # mask criterion: which weights a round keeps (11 choices, see PROTOCOL.md)
    fc_rate = None  # fraction of alive fc weights pruned per round; None: the paper's (0.2)
    output_rate = None  # fraction of alive output-layer weights pruned per round; None: the paper's (0.1)
    conv_rate = None  # fraction of alive conv weights pruned per round; None: the paper's (0.1; conv6 0.15)
    # which two weight states of the previous round the criterion scores (as its init and final weights):
    # init_final (the paper's), init_best (best = minimum validation loss), iter_final, init_iter (iter = the
    # weights after source_iteration steps, which must be an evaluation step: a multiple of training.eval_every)
    source = "init_final"
    source_iteration = None  # the step t of iter_final / init_iter


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
    check_choice("criterion.source", cfg["source"], trajectory.SOURCES)
    training = config.get("training", {})
    iterations = training.get("iterations") or arch.iterations
    try:
        trajectory.check(cfg["source"], cfg["source_iteration"], iterations)
    except ValueError as error:
        raise ConfigError(f"criterion.source_iteration={cfg['source_iteration']!r} is not valid: {error}") from None
    t, every = cfg["source_iteration"], training.get("eval_every", 1)
    if trajectory.needs_iteration(cfg["source"]) and t % every:
        raise ConfigError(f"criterion.source_iteration={t} is not valid: it must be an evaluation step, a multiple "
                          f"of training.eval_every={every}")
    return updates


@criterion_ingredient.capture
def layer_rates(roles, fc_rate, output_rate, conv_rate):
    """Per-weight prune fraction for a net's layer roles."""
    given = {"fc": fc_rate, "output": output_rate, "conv": conv_rate}
    return pruning.layer_rates(roles, {role: rate for role, rate in given.items() if rate is not None})
