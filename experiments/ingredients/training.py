"""The ``training`` ingredient: optimizer, learning rate, iterations, batch size, evaluation cadence, threads."""

from sacred import Ingredient

from experiments.errors import check_choice, check_number
from experiments.ingredients.arch import arch_ingredient, spec
from masking import training

# its config hook reads the arch (iterations, lr defaults) and, when present, the supermask ingredient (lr default)
training_ingredient = Ingredient("training", ingredients=[arch_ingredient])

SUPERMASK_LR = 0.1  # Adam on the Supermask scores (scores start at 0, so steps must be large)


@training_ingredient.config
def config():
    optimizer = "adam"  # adam (fused) or sgd
    lr = None  # learning rate; None: the paper's for the arch (lottery) or 0.1 on the scores (supermask)
    iterations = None  # training steps per round; None: the paper's for the arch (50k fc, 20k/25k/30k conv)
    batch_size = 60  # examples per step
    eval_every = 100  # steps between validation evaluations (early stopping keeps the best)
    threads = 1  # torch intra-op threads (0: torch's default, all cores, up to 30x slower when the cores are busy)


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
    return updates


@training_ingredient.capture
def training_config(optimizer, lr, iterations, batch_size, eval_every) -> training.TrainingConfig:
    """The resolved training settings as the library's ``TrainingConfig``."""
    return training.TrainingConfig(iterations=iterations, lr=lr, batch_size=batch_size, eval_every=eval_every,
                                   optimizer=optimizer)


@training_ingredient.capture
def cpu_settings(threads):
    training.cpu_settings(threads)
