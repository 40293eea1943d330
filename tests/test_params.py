"""Parameters declared once (``ticketlab.params``): a dataclass field's default, help and check become an
ingredient's config, ``print_config``'s documentation and its validation; nothing else declares them."""

from __future__ import annotations

import dataclasses
import re

import pytest
from sacred import Experiment, Ingredient

from experiments.errors import ConfigError
from experiments.ingredients import declare
from masking.lottery import LotterySpec
from masking.supermask_training import SupermaskSpec
from masking.training import TrainingConfig
from tests.conftest import run_cli
from ticketlab.params import choice, number, param, params
from ticketlab import schema
from ticketlab.registry import Registry

SHAPES: Registry[int] = Registry("shape")
SHAPES.add("square", 4)


@dataclasses.dataclass(frozen=True)
class ToySpec:
    """A procedure of one's own: each hyper-parameter is one field."""

    size: int
    width: int = param(3, "units per layer", number(low=1, integer=True))
    shape: str = param("square", "layer shape: {choices}", choice(lambda: SHAPES.names()))
    decay: float | None = param(None, "weight decay; None: none", number(low=0, none=True))


def toy_experiment():
    toy = Ingredient("toy")
    declare(toy, params(ToySpec))
    ex = Experiment("toy", ingredients=[toy])
    built = {}

    @ex.main
    def main(_config):
        built["spec"] = ToySpec(size=1, **_config["toy"])

    return ex, built


def test_a_field_is_the_config_its_documentation_and_its_check(capsys):
    SHAPES.add("round", 5)  # registered after the field: its help and check name it all the same
    ex, built = toy_experiment()
    ex.run("print_config")
    shown = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    assert re.search(r"width = 3 +# units per layer\n", shown)
    assert re.search(r"shape = 'square' +# layer shape: square, round\n", shown)
    assert re.search(r"decay = None +# weight decay; None: none\n", shown)

    ex.run(config_updates={"toy": {"width": 8, "shape": "round"}})
    assert built["spec"] == ToySpec(size=1, width=8, shape="round", decay=None)
    for update, message in [({"width": 0}, "toy.width=0 is out of range; valid range: [1, inf)"),
                            ({"width": 2.5}, "toy.width=2.5 is not valid; it must be an integer"),
                            ({"shape": "oval"}, "toy.shape='oval' is not valid; valid choices: square, round"),
                            ({"decay": -1}, "toy.decay=-1 is out of range; valid range: [0, inf)")]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            ex.run(config_updates={"toy": update})


def test_params_names_what_a_dataclass_declares():
    assert [p.key for p in params(LotterySpec, "criterion", "sources")] == ["name", "source"]
    assert [p.default for p in params(LotterySpec, "criterion", "sources")] == ["large_final", "init_final"]
    with pytest.raises(KeyError, match="LotterySpec declares no parameter role; it declares criterion, mask1"):
        params(LotterySpec, "role")


@pytest.mark.parametrize("experiment", ["experiments.lottery", "experiments.supermask"])
def test_print_config_documents_every_setting_with_its_declared_default(ticketlab_env, experiment):
    shown, undocumented = shown_settings(experiment, ticketlab_env)
    assert len(shown) > 25 and not undocumented, undocumented
    where = {"criterion": "criterion", "sources": "criterion", "mask1": "treatment", "mask0": "treatment",
             "rounds": "pruning"}
    declared = [("training", p) for p in params(TrainingConfig)] + (
        [("supermask", p) for p in params(SupermaskSpec)] if experiment.endswith("supermask") else
        [(where[name], p) for name, p in zip(where, params(LotterySpec, *where))])
    for section, p in declared:
        if p.key not in ("lr", "iterations"):  # the arch's, filled in
            assert shown[f"{section}.{p.key}"] == repr(p.default), p.key


def test_the_short_columns_name_settings_the_experiments_declare(ticketlab_env):
    """The run frame's short column names (``ticketlab.schema.CONFIG_COLUMNS``: ``criterion`` for
    ``criterion.name``) each point at a setting one of the experiments shows; every other setting is a column under
    its dotted path by itself."""
    shown = {path for experiment in ("experiments.lottery", "experiments.supermask")
             for path in shown_settings(experiment, ticketlab_env)[0]}
    assert {"seed", "criterion.name", "training.lr"} <= shown
    assert not {path for path in schema.CONFIG_COLUMNS.values() if path not in shown}


def shown_settings(experiment: str, env: dict) -> tuple[dict[str, str], list[str]]:
    """What ``print_config`` shows: {dotted path: value as printed}, and the lines without documentation."""
    result = run_cli(experiment, "print_config", env=env)
    assert result.returncode == 0, result.stderr
    shown, undocumented, section = {}, [], ""
    for line in (re.sub(r"\x1b\[[0-9;]*m", "", line) for line in result.stdout.splitlines()):
        if re.match(r"  (\w+):$", line):
            section = line.strip()[:-1] + "."
        elif m := re.match(r"(\s+)(\w+) = (\S+)", line):
            shown[(section if len(m.group(1)) > 2 else "") + m.group(2)] = m.group(3)
            undocumented += [] if re.search(r" # \S", line) else [line.strip()]
    return shown, undocumented
