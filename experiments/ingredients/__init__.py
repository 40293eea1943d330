"""One Sacred ingredient per component. Each has documented config (shown by ``print_config``), a ``fast`` named
config for smoke tests, a config hook that validates its values (and fills ``None`` defaults from the arch) before
any run starts, and ``@capture``d builders. An ingredient whose config hook reads another ingredient's config
declares it (``Ingredient(name, ingredients=[arch_ingredient])``), so the order of an experiment's list does not
matter."""

import dataclasses


def default(procedure: type, field: str):
    """The default of ``field`` in a procedure's dataclass (``masking.lottery.LotterySpec``,
    ``masking.training.TrainingConfig``, ``masking.supermask_training.SupermaskSpec``): the one place it is written;
    an ingredient's config takes it from there."""
    return next(f.default for f in dataclasses.fields(procedure) if f.name == field)
