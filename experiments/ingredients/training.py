"""The ``training`` ingredient: optimizer, learning rate, iterations, batch size, evaluation cadence (the
procedure's ``TrainingConfig``), threads, device, CUDA graphs and dtype.

``threads``, ``device`` and ``graphs`` say how a run executes, not what it computes: they are execution keys
(outside the condition hash), and what was used is recorded in ``info.execution``.
"""

import torch
from sacred import Ingredient

from experiments.errors import ConfigError
from experiments.ingredients import declare
from experiments.ingredients.arch import arch_ingredient, spec
from masking import population, training
from ticketlab.params import Param, choice, field_values, number, params

# its config hook reads the arch (iterations, lr defaults) and, when present, the supermask ingredient (lr default)
training_ingredient = Ingredient("training", ingredients=[arch_ingredient])

SUPERMASK_LR = 0.1  # Adam on the Supermask scores (scores start at 0, so steps must be large)


# the settings outside the procedure's TrainingConfig (threads, device, graphs: execution keys, see above)
RUN_SETTINGS = [
    Param("threads", 1, "torch intra-op threads (0: torch's default, all cores, up to 30x slower when the cores are "
          "busy)", number(low=0, integer=True)),
    Param("device", "auto", "auto (CUDA when available, else cpu), cpu, cuda or cuda:N"),
    Param("graphs", "auto", "auto (on a GPU, each training step one CUDA graph: same numbers, less launch time) or off",
          choice(training.GRAPHS_CHOICES)),
    Param("dtype", "float32", "float32, or float64 (population members then equal their single runs to 1e-9)",
          choice(tuple(population.DTYPES))),
]
declare(training_ingredient, params(training.TrainingConfig) + RUN_SETTINGS)


@training_ingredient.named_config
def fast():
    iterations = 100
    eval_every = 25


@training_ingredient.config_hook
def resolve(config, command_name, logger):
    """Fill None defaults from the arch (the paper's settings) and check the device on this machine (``declare``
    checks the rest)."""
    cfg, arch = config["training"], spec(config)
    updates = {}
    if cfg["lr"] is None:
        updates["lr"] = SUPERMASK_LR if "supermask" in config else arch.lr
    if cfg["iterations"] is None:
        updates["iterations"] = arch.iterations
    try:
        training.resolve_device(cfg["device"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return updates


@training_ingredient.capture
def training_config(_config) -> training.TrainingConfig:
    """The resolved training settings as the library's ``TrainingConfig``: each of its fields from the key of that
    name (a hyper-parameter of its own is one field there: ``ticketlab.params``)."""
    return training.TrainingConfig(**field_values(params(training.TrainingConfig), _config))


@training_ingredient.capture
def dtype(dtype) -> torch.dtype:
    return population.dtype_of(dtype)


@training_ingredient.capture
def graphs(graphs) -> str:
    """The ``training.graphs`` setting (``masking.training.use_graphs``)."""
    return graphs


@training_ingredient.capture
def execution_settings(threads, device, graphs):
    """Apply the process-wide settings (threads, flushed denormals; on CUDA determinism) and return the device
    to train on and the run's execution info."""
    return training.prepare_execution(threads, device, graphs)
