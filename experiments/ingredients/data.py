"""The ``data`` ingredient: which data set, where it lives, and the fixed validation split."""

import os

from sacred import Ingredient

from experiments import datasets
from experiments.errors import DataError, check_number
from experiments.ingredients import declare
from ticketlab.params import Param, choice, number

data_ingredient = Ingredient("data")


declare(data_ingredient, [
    Param("name", "mnist", "data set: {choices}", choice(lambda: datasets.names())),
    Param("root", lambda: os.environ.get("TICKETLAB_DATA") or os.path.join(os.environ.get("TICKETLAB_HOME",
                                                                                          "~/.ticketlab"), "data"),
          "where data sets live, in torchvision's layout (<root>/MNIST/raw, ...): $TICKETLAB_DATA, else "
          "$TICKETLAB_HOME/data"),
    Param("val_size", 5000, "training images split off for validation (early stopping)", number(low=1, integer=True)),
    Param("split_seed", 0, "seed of the validation split: the same split for every run", number(integer=True)),
    Param("preprocess", "unit", "input scaling: unit (pixels / 255, the paper's) or standardize (then per-channel "
          "z-score)", choice(datasets.PREPROCESS)),
    Param("synthetic_shape", "mnist", "synthetic only: mnist (1x28x28) or cifar (3x32x32)",
          choice(datasets.SYNTHETIC_SHAPES)),
    Param("synthetic_train", 6000, "synthetic only: training images, validation included", number(low=2, integer=True)),
    Param("synthetic_test", 1000, "synthetic only: test images", number(low=1, integer=True)),
])


@data_ingredient.named_config
def fast():
    val_size = 1000  # a smaller validation set, evaluated faster
    synthetic_train = 3000


@data_ingredient.config_hook
def validate(config, command_name, logger):
    """More training images than the validation split takes; the data set on disk (``declare`` checks the rest)."""
    cfg = config["data"]
    if isinstance(cfg["val_size"], int):
        check_number("data.synthetic_train", cfg["synthetic_train"], low=cfg["val_size"] + 1, integer=True)
    if command_name not in ("print_config", "print_dependencies", "save_config"):
        try:  # before the run starts: a missing data set fails here, in one line, with nothing written
            datasets.ensure_available(cfg["name"], cfg["root"])
        except datasets.DataNotFound as error:
            raise DataError(str(error)) from None
    return {}


@data_ingredient.capture
def load(name, root, val_size, split_seed, preprocess, synthetic_shape, synthetic_train,
         synthetic_test) -> datasets.Splits:
    return datasets.load(name, root, val_size, split_seed, preprocess, synthetic_shape=synthetic_shape,
                         synthetic_train=synthetic_train, synthetic_test=synthetic_test)
