"""CUDA graphs of the training step (``training.graphs``): an execution setting, off where it cannot apply, and on a
GPU the same numbers as the eager step, bit for bit: single runs and populations, lottery and Supermask, fully
connected and convolutional. The tests marked ``cuda`` need a GPU (``scripts/gpu-check.sh`` runs them: ``pytest -m
cuda``); the others run anywhere."""

from __future__ import annotations

import pytest
import torch

from experiments import datasets
from masking import hashing, lottery, models, population, population_procedures, supermask, supermask_training, training
from masking.training import TrainingConfig
from ticketlab.identity import condition_hash, point_hash

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def test_graphs_apply_on_a_gpu_with_a_graph_safe_optimizer_only():
    assert training.GRAPHS_CHOICES == ("auto", "off")
    assert not training.use_graphs("auto", "cpu", "adam") and not training.use_graphs("off", "cpu", "adam")
    assert training.use_graphs("auto", "cuda:0", "adam") == CUDA
    assert not training.use_graphs("auto", "cuda:0", "sgd_he2016")  # its learning rate changes from Python
    assert not training.use_graphs("off", "cuda:0", "adam")
    with pytest.raises(ValueError, match=r"^training.graphs='on' is not valid; valid choices: auto, off$"):
        training.use_graphs("on", "cpu", "adam")
    net = models.build("lenet300_100", kind="masked")
    assert training.make_optimizer(net, "adam", 1e-3, graphs=True).param_groups[0]["capturable"]
    assert not training.make_optimizer(net, "adam", 1e-3).param_groups[0]["capturable"]


def test_graphs_is_an_execution_setting():
    config = {"seed": 1, "training": {"lr": 0.1, "graphs": "auto"}}
    off = {"seed": 1, "training": {"lr": 0.1, "graphs": "off"}}
    assert condition_hash(config) == condition_hash(off) and point_hash(config) == point_hash(off)


def test_a_bad_graphs_setting_is_one_line_before_anything_runs():
    from experiments import lottery as lottery_ex
    from experiments.errors import ConfigError

    with pytest.raises(ConfigError, match=r"training.graphs='on' is not valid; valid choices: auto, off"):
        lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"},
                          config_updates={"data": {"name": "synthetic"}, "training": {"graphs": "on"}})


# ------------------------------------------------------------------------------------------------ on a GPU only


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", "/nonexistent", 300, 0, synthetic_shape="mnist", synthetic_train=1500,
                         synthetic_test=300)


@pytest.fixture
def captures(monkeypatch):
    """Counts the CUDA graphs captured (one per training of a net or population), with the real capture."""
    count = []
    capture = training.GraphedStep.capture

    def counted(self):
        count.append(self)
        return capture(self)

    monkeypatch.setattr(training.GraphedStep, "capture", counted)
    from masking.training import device_settings

    device_settings(training.resolve_device("cuda"))
    yield count
    torch.use_deterministic_algorithms(False)


def _same(a: dict, b: dict) -> None:
    """Two record dicts equal in every field but the wall time."""
    assert {k: v for k, v in a.items() if k != "train_seconds"} == {k: v for k, v in b.items() if k != "train_seconds"}


CONFIG = TrainingConfig(iterations=40, lr=1.2e-3, eval_every=10)


@pytest.mark.cuda
@needs_cuda
def test_a_lottery_run_with_graphs_is_the_eager_run(data, captures):
    spec = lottery.LotterySpec("lenet300_100", 3, CONFIG, criterion="large_final", mask1="signed_constant",
                               mask0="random_zero", rounds=2)
    runs = {graphs: list(lottery.iterate_rounds(lottery.setup(spec, data, "cuda", graphs=graphs)))
            for graphs in ("off", "auto")}
    assert len(captures) == 3  # one graph per round: the graphed run used them
    for eager, graphed in zip(runs["off"], runs["auto"], strict=True):
        _same(eager.record.to_dict(), graphed.record.to_dict())
        assert eager.curve == graphed.curve
        assert hashing.state_hash(eager.best) == hashing.state_hash(graphed.best)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("arch,shape", [("lenet300_100", "mnist"), ("conv2", "cifar")])
def test_a_lottery_population_with_graphs_is_the_eager_one(arch, shape, captures):
    """Fully connected (hand-written gradients) and convolutional (autograd) populations."""
    data = datasets.load("synthetic", "/nonexistent", 200, 0, synthetic_shape=shape, synthetic_train=800,
                         synthetic_test=200)
    specs = [lottery.LotterySpec(arch, seed, TrainingConfig(iterations=30, lr=1e-3, eval_every=10),
                                 criterion=criterion, rounds=1)
             for seed, criterion in ((1, "large_final"), (2, "random"), (3, "magnitude_increase"))]
    runs = {}
    for graphs in ("off", "auto"):
        placed = training.place(data, "cuda")
        runs[graphs] = list(population_procedures.lottery_rounds(
            [lottery.setup(spec, placed, "cuda", graphs=graphs) for spec in specs]))
    assert len(captures) == 2
    for eager, graphed in zip(runs["off"], runs["auto"], strict=True):
        for a, b in zip(eager, graphed, strict=True):
            _same(a.record.to_dict(), b.record.to_dict())
            assert a.curve == b.curve


@pytest.mark.cuda
@needs_cuda
def test_supermasks_with_graphs_are_the_eager_ones(data, captures):
    """A single learned Supermask (its mask samples from its CUDA generator) and a population of them (one noise
    draw per step from the population's generator), with dynamic rescaling and signed constants."""
    config = TrainingConfig(iterations=40, lr=0.1, eval_every=10)
    spec = supermask_training.SupermaskSpec("lenet300_100", 2, config, signed_constant=True, rescale=True,
                                            eval_samples=3)
    single = {graphs: supermask_training.run(spec, data, device="cuda", graphs=graphs) for graphs in ("off", "auto")}
    _same(single["off"].record.to_dict(), single["auto"].record.to_dict())
    assert single["off"].curve == single["auto"].curve
    specs = [supermask_training.SupermaskSpec("lenet300_100", seed, config, signed_constant=signed, rescale=signed,
                                              eval_samples=3) for seed, signed in ((1, False), (2, True), (3, True))]
    members = {graphs: population_procedures.supermasks(specs, data, device="cuda", graphs=graphs)
               for graphs in ("off", "auto")}
    assert len(captures) == 2
    for a, b in zip(members["off"], members["auto"], strict=True):
        _same(a.record.to_dict(), b.record.to_dict())
        assert a.curve == b.curve
    # the members start where their single runs start (the population's noise is its own: README, Populations)
    alone = supermask_training.run(specs[1], data, device="cuda")
    assert members["auto"][1].record.init_hash == alone.record.init_hash
    assert members["auto"][1].record.untrained_test_acc_mean == alone.record.untrained_test_acc_mean


@pytest.mark.cuda
@needs_cuda
def test_a_population_step_on_the_gpu_draws_all_noise_at_once():
    """One ``torch.rand`` per step for every member and Supermask layer (what ``population.Stack.noise`` draws),
    from a generator seeded by the members' own: two populations of the same members draw the same noise."""
    nets = [models.build("lenet300_100", seed=seed, kind="supermask").cuda() for seed in (1, 2)]
    for seed, net in zip((1, 2), nets):
        supermask.set_generator(net, torch.Generator("cuda").manual_seed(100 + seed))
    stacks = [population.Stack(nets), population.Stack(nets)]
    assert stacks[0].noise is not None and stacks[0].noise.device.type == "cuda"
    draws = [stack._uniforms() for stack in stacks]
    assert list(draws[0]) == ["fcs.0", "fcs.1", "fcs.2"]
    assert all(torch.equal(draws[0][k], draws[1][k]) for k in draws[0])
    assert draws[0]["fcs.0"].shape == stacks[0].tensor("fcs.0.weight").shape
