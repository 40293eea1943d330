"""The ``treatment`` ingredient: the mask-1 action (kept weights' start values) and mask-0 action (pruned
weights' frozen values) applied before each retraining round."""

from sacred import Ingredient

from experiments.errors import check_choice
from experiments.ingredients import default
from masking import treatments
from masking.lottery import LotterySpec

treatment_ingredient = Ingredient("treatment")


@treatment_ingredient.config
def config():
    mask1 = default(LotterySpec, "mask1")  # kept weights start from: original (rewind), reinit, reshuffle, constant, signed_*
    mask0 = default(LotterySpec, "mask0")  # pruned weights are frozen at: zero, init, zero_if_toward_zero, random_zero


@treatment_ingredient.config_hook
def validate(config, command_name, logger):
    check_choice("treatment.mask1", config["treatment"]["mask1"], treatments.mask1_names())
    check_choice("treatment.mask0", config["treatment"]["mask0"], treatments.mask0_names())
    return {}
