"""The ``arch`` ingredient: which of the paper's networks."""

from sacred import Ingredient

from experiments.errors import check_choice
from masking import models

arch_ingredient = Ingredient("arch")


@arch_ingredient.config
def config():
    name = "lenet300_100"  # network: lenet300_100, conv2, conv4 or conv6 (see docs/protocol.md)


@arch_ingredient.config_hook
def validate(config, command_name, logger):
    check_choice("arch.name", config["arch"]["name"], models.names())
    return {}


@arch_ingredient.capture
def build(name, seed, kind, input_shape, num_classes, **options):
    """The network ``name`` initialized from ``seed``, shaped for the data (see ``masking.models.build``)."""
    return models.build(name, seed, kind, input_shape=input_shape, num_classes=num_classes, **options)


def spec(config) -> models.ArchSpec:
    """The ArchSpec of a full run config (for other ingredients' defaults)."""
    return models.spec(config["arch"]["name"])
