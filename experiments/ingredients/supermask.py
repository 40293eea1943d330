"""The ``supermask`` ingredient: how a learned Supermask is parameterized and evaluated."""

from sacred import Ingredient

from experiments.errors import ConfigError, check_choice, check_number
from experiments.ingredients import default
from masking import criteria
from masking.supermask_training import SupermaskSpec

supermask_ingredient = Ingredient("supermask")
STARTS = ("scratch", "run", "criterion")


@supermask_ingredient.config
def config():
    signed_constant = default(SupermaskSpec, "signed_constant")  # train the mask over signed-constant weights (std * sign(w_init)) instead of w_init
    rescale = default(SupermaskSpec, "rescale")  # dynamic weight rescaling: scale each layer by size / ones in the sampled mask, every pass
    score_init = default(SupermaskSpec, "score_init")  # initial score of every weight (0: keep probability sigmoid(0) = 0.5)
    eval_samples = default(SupermaskSpec, "eval_samples")  # test accuracy is the mean over this many mask samples (accuracies averaged)
    sign_draws = 5  # after training, accuracy with random signs over this many sign draws (also flipped signs and
    # signed constants; each over eval_samples masks); 0: skip
    # where the scores start: scratch (score_init everywhere), run (the mask of round start_round of the finished
    # lottery run start_run, read from the run database given with -m) or criterion (a one-shot mask keeping
    # start_percent percent of each layer by criterion start_criterion, scored from the seed's initial weights and
    # the dense net trained for start_iterations steps with the arch's Adam rate). Kept weights start at keep
    # probability p_keep, pruned ones at p_drop (scores = logit(p)).
    start = "scratch"
    start_run = None
    start_round = None
    start_criterion = "large_final"
    start_percent = 30.0
    start_iterations = None  # None: training.iterations
    p_keep = default(SupermaskSpec, "p_keep")
    p_drop = default(SupermaskSpec, "p_drop")


@supermask_ingredient.config_hook
def validate(config, command_name, logger):
    cfg = config["supermask"]
    check_number("supermask.score_init", cfg["score_init"])
    check_number("supermask.eval_samples", cfg["eval_samples"], low=1, integer=True)
    check_number("supermask.sign_draws", cfg["sign_draws"], low=0, integer=True)
    check_choice("supermask.start", cfg["start"], STARTS)
    for key in ("p_keep", "p_drop"):
        check_number(f"supermask.{key}", cfg[key], low=0, high=1, low_open=True, high_open=True)
    if cfg["start"] == "run":
        check_number("supermask.start_run", cfg["start_run"], low=1, integer=True)
        check_number("supermask.start_round", cfg["start_round"], low=0, integer=True)
    if cfg["start"] == "criterion":
        check_choice("supermask.start_criterion", cfg["start_criterion"], criteria.names())
        check_number("supermask.start_percent", cfg["start_percent"], low=0, high=100, low_open=True,
                     high_open=True)
        check_number("supermask.start_iterations", cfg["start_iterations"], low=1, integer=True, allow_none=True)
    for key in ("signed_constant", "rescale"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"supermask.{key}={cfg[key]!r} is not valid; valid choices: True, False")
    return {}
