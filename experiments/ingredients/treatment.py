"""The ``treatment`` ingredient: the mask-1 action (kept weights' start values) and mask-0 action (pruned
weights' frozen values) applied before each retraining round."""

from sacred import Ingredient

from experiments.ingredients import declare
from masking.lottery import LotterySpec
from ticketlab.params import params

treatment_ingredient = Ingredient("treatment")
declare(treatment_ingredient, params(LotterySpec, "mask1", "mask0"))
