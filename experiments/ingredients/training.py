"""The ``training`` ingredient: optimizer, learning rate, iterations, batch size, evaluation cadence, threads, device,
CUDA graphs.

``threads``, ``device`` and ``graphs`` say how a run executes, not what it computes: they are execution keys
(outside the condition hash), and what was used is recorded in ``info.execution``.
"""

import dataclasses

import torch
from sacred import Ingredient

from experiments.errors import ConfigError, check_choice, check_number
from experiments.ingredients import default
from experiments.ingredients.arch import arch_ingredient, spec
from masking import population, training

# its config hook reads the arch (iterations, lr defaults) and, when present, the supermask ingredient (lr default)
training_ingredient = Ingredient("training", ingredients=[arch_ingredient])

SUPERMASK_LR = 0.1  # Adam on the Supermask scores (scores start at 0, so steps must be large)


@training_ingredient.config
def config():
    optimizer = default(training.TrainingConfig, "optimizer")  # adam (fused), sgd, or sgd_he2016 (ResNet: momentum 0.9, wd 1e-4, lr / 10 at 32k and 48k)
    lr = None  # learning rate; None: the paper's for the arch (lottery) or 0.1 on the scores (supermask)
    iterations = None  # training steps per round; None: the paper's for the arch (50k fc, 20k/25k/30k conv)
    batch_size = default(training.TrainingConfig, "batch_size")  # examples per step
    eval_every = default(training.TrainingConfig, "eval_every")  # steps between validation evaluations (early stopping keeps the best)
    threads = 1  # torch intra-op threads (0: torch's default, all cores, up to 30x slower when the cores are busy)
    device = "auto"  # auto (CUDA when available, else cpu), cpu, cuda or cuda:N
    graphs = "auto"  # auto (on a GPU, each training step one CUDA graph: same numbers, less launch time) or off
    dtype = "float32"  # float32, or float64 (population members then equal their single runs to 1e-9)


@training_ingredient.named_config
def fast():
    iterations = 100
    eval_every = 25


@training_ingredient.config_hook
def resolve(config, command_name, logger):
    """Fill None defaults from the arch (the paper's settings) and check every value."""
    cfg, arch = config["training"], spec(config)
    updates = {}
    if cfg["lr"] is None:
        updates["lr"] = SUPERMASK_LR if "supermask" in config else arch.lr
    if cfg["iterations"] is None:
        updates["iterations"] = arch.iterations
    cfg = {**cfg, **updates}
    check_choice("training.optimizer", cfg["optimizer"], training.optimizer_names())
    check_number("training.lr", cfg["lr"], low=0, low_open=True)
    check_number("training.iterations", cfg["iterations"], low=1, integer=True)
    check_number("training.batch_size", cfg["batch_size"], low=1, integer=True)
    check_number("training.eval_every", cfg["eval_every"], low=1, integer=True)
    check_number("training.threads", cfg["threads"], low=0, integer=True)
    check_choice("training.graphs", cfg["graphs"], training.GRAPHS_CHOICES)
    try:
        training.resolve_device(cfg["device"])
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_choice("training.dtype", cfg["dtype"], population.DTYPES)
    return updates


@training_ingredient.capture
def training_config(_config) -> training.TrainingConfig:
    """The resolved training settings as the library's ``TrainingConfig``: each of its fields from the key of that
    name (a hyper-parameter of its own is one field there and one line in ``config``)."""
    return training.TrainingConfig(**{f.name: _config[f.name] for f in dataclasses.fields(training.TrainingConfig)})


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
