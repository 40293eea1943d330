"""The ``arch`` ingredient: which of the paper's networks."""

from sacred import Ingredient

from experiments.ingredients import declare
from masking import models
from ticketlab.params import Param, choice

arch_ingredient = Ingredient("arch")


declare(arch_ingredient, [Param("name", "lenet300_100", "network: {choices} (docs/protocol.md)",
                                choice(lambda: models.names()))])


@arch_ingredient.capture
def build(name, seed, kind, input_shape, num_classes, **options):
    """The network ``name`` initialized from ``seed``, shaped for the data (see ``masking.models.build``)."""
    return models.build(name, seed, kind, input_shape=input_shape, num_classes=num_classes, **options)


def spec(config) -> models.ArchSpec:
    """The ArchSpec of a full run config (for other ingredients' defaults)."""
    return models.spec(config["arch"]["name"])
