"""The ``supermask`` ingredient: how a learned Supermask is parameterized and evaluated."""

from sacred import Ingredient

from experiments.errors import ConfigError, check_number
from experiments.ingredients import declare
from masking import criteria
from masking.supermask_training import SupermaskSpec
from ticketlab.params import Param, choice, number, params

supermask_ingredient = Ingredient("supermask")
STARTS = ("scratch", "run", "criterion")


# where the scores start (the procedure's start_mask: kept weights at keep probability p_keep, pruned ones at p_drop)
START = [
    Param("start", "scratch", "where the scores start: scratch (score_init everywhere), run (the mask of round "
          "start_round of the finished lottery run start_run, read from the run database given with -m) or criterion "
          "(a one-shot mask by start_criterion, start_percent, start_iterations)", choice(STARTS)),
    Param("start_run", None, "start=run (needed): the COMPLETED lottery run's id",
          number(low=1, integer=True, none=True)),
    Param("start_round", None, "start=run (needed): its round", number(low=0, integer=True, none=True)),
    Param("start_criterion", "large_final", "start=criterion: the criterion ({choices}), scored from the seed's "
          "initial weights and the dense net trained for start_iterations steps with the arch's Adam rate",
          choice(lambda: criteria.names())),
    Param("start_percent", 30.0, "start=criterion: percent of each layer kept",
          number(low=0, high=100, low_open=True, high_open=True)),
    Param("start_iterations", None, "start=criterion: dense training steps; None: training.iterations",
          number(low=1, integer=True, none=True)),
]
declare(supermask_ingredient, params(SupermaskSpec) + START)


@supermask_ingredient.config_hook
def validate(config, command_name, logger):
    """A start from a run needs the run and its round."""
    cfg = config["supermask"]
    if cfg["start"] == "run" and None in (cfg["start_run"], cfg["start_round"]):
        raise ConfigError("supermask.start=run needs supermask.start_run (a COMPLETED lottery run's id) and "
                          "supermask.start_round (its round)")
    if cfg["start"] == "run":
        check_number("supermask.start_run", cfg["start_run"], low=1, integer=True)
        check_number("supermask.start_round", cfg["start_round"], low=0, integer=True)
    return {}
