"""The ``pruning`` ingredient: how many iterative pruning rounds follow the dense round 0."""

from sacred import Ingredient

from experiments.ingredients import declare
from masking.lottery import LotterySpec
from ticketlab.params import params

pruning_ingredient = Ingredient("pruning")
declare(pruning_ingredient, params(LotterySpec, "rounds"))


@pruning_ingredient.named_config
def fast():
    rounds = 2
