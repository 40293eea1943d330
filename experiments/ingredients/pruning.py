"""The ``pruning`` ingredient: how many iterative pruning rounds follow the dense round 0."""

from sacred import Ingredient

from experiments.errors import check_number
from experiments.ingredients import default
from masking.lottery import LotterySpec

pruning_ingredient = Ingredient("pruning")


@pruning_ingredient.config
def config():
    rounds = default(LotterySpec, "rounds")  # pruning rounds after the dense round 0 (24: about 0.5% of fc weights remain, as in the paper)


@pruning_ingredient.named_config
def fast():
    rounds = 2


@pruning_ingredient.config_hook
def validate(config, command_name, logger):
    check_number("pruning.rounds", config["pruning"]["rounds"], low=0, integer=True)
    return {}
