"""The ``supermask`` ingredient: how a learned Supermask is parameterized and evaluated."""

from sacred import Ingredient

from experiments.errors import ConfigError, check_number

supermask_ingredient = Ingredient("supermask")


@supermask_ingredient.config
def config():
    signed_constant = False  # train the mask over signed-constant weights (std * sign(w_init)) instead of w_init
    rescale = False  # dynamic weight rescaling: scale each layer by size / ones in the sampled mask, every pass
    score_init = 0.0  # initial score of every weight (0: keep probability sigmoid(0) = 0.5)
    eval_samples = 10  # test accuracy is the mean over this many mask samples (accuracies averaged)


@supermask_ingredient.config_hook
def validate(config, command_name, logger):
    cfg = config["supermask"]
    check_number("supermask.score_init", cfg["score_init"])
    check_number("supermask.eval_samples", cfg["eval_samples"], low=1, integer=True)
    for key in ("signed_constant", "rescale"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"supermask.{key}={cfg[key]!r} is not valid; valid choices: True, False")
    return {}
