"""The GPU path kept honest on the CPU: a lottery run, a learned Supermask and populations run with their tensors on a
stand-in device (``tests/device_tracer.py``): no op mixes device and host tensors, no generator draws for the wrong
side, the numbers are the CPU run's, no host sync happens inside a training step (what a CUDA graph of the step
needs) and an evaluation point reads its results once. The checker itself fails on planted bugs of each kind."""

from __future__ import annotations

import pytest
import torch

from experiments import datasets
from masking import lottery, models, population, population_procedures, rng, start_mask, supermask
from masking import supermask_training, training, treatments
from masking.training import TrainingConfig
from tests.device_tracer import DeviceGenerator, DeviceTracer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", "/nonexistent", 500, 0, synthetic_shape="mnist", synthetic_train=1500,
                         synthetic_test=500)


def without_time(record) -> dict:
    return {k: v for k, v in record.to_dict().items() if k != "train_seconds"}


def test_a_lottery_run_keeps_to_the_device(data):
    spec = lottery.LotterySpec("lenet300_100", 3, TrainingConfig(iterations=30, lr=1.2e-3, eval_every=10),
                               criterion="large_final", mask1="constant", mask0="random_zero", rounds=1)
    on_cpu = list(lottery.iterate_rounds(lottery.setup(spec, data)))
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        setup = lottery.setup(spec, data, tracer.device)
        assert setup.device == tracer.device and setup.net.fcs[0].weight.is_cuda  # the code sees a CUDA device
        traced = list(lottery.iterate_rounds(setup))
        assert all(tracer.on_device(t) for r in traced for t in (*r.final.values(), *r.mask.values()))
    tracer.check()
    assert [without_time(r.record) for r in traced] == [without_time(r.record) for r in on_cpu]
    assert (tracer.steps, tracer.evaluations) == (60, 6)
    # no host sync in a step (the batch order reaches the device from pinned memory, asynchronously; README,
    # Speed on a GPU) and one read per evaluation point: validation loss and accuracy with the training losses
    assert tracer.sync_sites("step") == {}, tracer.report()
    assert tracer.sync_sites("evaluation") == {("to host", "masking/training.py train_loop"): 6}, tracer.report()


def test_a_supermask_run_keeps_to_the_device(data):
    spec = supermask_training.SupermaskSpec("lenet300_100", 2, TrainingConfig(30, 0.1, eval_every=10),
                                            signed_constant=True, rescale=True, eval_samples=2, sign_draws=1)
    on_cpu = supermask_training.run(spec, data)
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        traced = supermask_training.run(spec, data, device=tracer.device)
        assert all(tracer.on_device(scores) for scores in traced.scores.values())
    tracer.check()
    # training-time masks come from a generator on the device (here standing in, seeded like the CPU's stream)
    assert tracer.ops[("aten.rand", "device")] >= 3 * 30
    assert without_time(traced.record) == without_time(on_cpu.record)
    assert tracer.sync_sites("step") == {}, tracer.report()
    assert tracer.per_evaluation() == 2  # the loop's one read, and the expected density's


def test_populations_keep_to_the_device(data):
    config = TrainingConfig(iterations=30, lr=0.1, eval_every=10)
    specs = [supermask_training.SupermaskSpec("lenet300_100", seed, config, signed_constant=signed, rescale=signed,
                                              eval_samples=2) for seed, signed in ((1, False), (2, True))]
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        results = population_procedures.supermasks(specs, data, device=tracer.device)
    tracer.check()
    assert all(0 <= r.record.test_acc_mean <= 1 for r in results)
    assert tracer.sync_sites("step") == {}, tracer.report()  # the rescale flags live on the device
    # one read per evaluation point for all members (the loop's), and one for all their expected densities
    assert tracer.per_evaluation() == 2, tracer.report()
    # the training-time noise of both members and all three layers: one draw per step (and one per validation)
    assert tracer.ops[("aten.rand", "device")] == 30 + 3

    convs = datasets.load("synthetic", "/nonexistent", 60, 0, synthetic_shape="mnist", synthetic_train=180,
                          synthetic_test=60)
    config = TrainingConfig(iterations=6, lr=1e-3, batch_size=20, eval_every=3)
    specs = [lottery.LotterySpec("conv2", seed, config, criterion=criterion, mask1="signed_constant", mask0="init",
                                 rounds=1) for seed, criterion in ((1, "large_final"), (2, "random"))]
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        placed = training.place(convs, tracer.device)
        rounds = list(population_procedures.lottery_rounds([lottery.setup(s, placed, tracer.device) for s in specs]))
    tracer.check()
    assert tracer.ops[("aten.convolution", "device")] > 0 and not tracer.ops[("aten.convolution", "host")]
    assert [[r.record.round for r in members] for members in rounds] == [[0, 0], [1, 1]]
    assert tracer.sync_sites("step") == {}, tracer.report()
    assert tracer.sync_sites("evaluation") == {("to host", "masking/training.py train_loop"): 4}, tracer.report()


def test_a_fully_connected_population_steps_without_a_sync(data):
    """The hand-written gradients of a fully connected population (``population.fc_gradients``): the one-hot by
    comparison, no scatter (which under deterministic algorithms sorts and copies to the host on a GPU)."""
    config = TrainingConfig(iterations=20, lr=1.2e-3, eval_every=10)
    specs = [lottery.LotterySpec("lenet300_100", seed, config, criterion=criterion, rounds=1)
             for seed, criterion in ((1, "large_final"), (2, "random"), (3, "magnitude_increase"))]
    on_cpu = list(population_procedures.lottery_rounds([lottery.setup(s, data) for s in specs]))
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        placed = training.place(data, tracer.device)
        traced = list(population_procedures.lottery_rounds([lottery.setup(s, placed, tracer.device) for s in specs]))
    tracer.check()
    assert not tracer.ops[("aten.scatter_add_", "device")] and not tracer.ops[("aten.scatter_add", "device")]
    assert tracer.sync_sites("step") == {}, tracer.report()
    assert [[without_time(r.record) for r in members] for members in traced] == \
        [[without_time(r.record) for r in members] for members in on_cpu]


def test_constants_of_the_constant_treatments_are_computed_on_the_host():
    """A GPU reduces in another order than the CPU: the std of the constant actions is taken on the CPU."""
    w = torch.randn(300, 784, generator=torch.Generator().manual_seed(0))
    with DeviceTracer() as tracer:
        on_device = w.to(tracer.device)
        alpha = treatments.layer_alpha(on_device)
        signed = supermask.resigned(on_device, "signed_constant")
        assert tracer.on_device(signed)
    tracer.check()
    assert tracer.ops[("aten.std", "host")] == 2 and not tracer.ops[("aten.std", "device")]
    assert alpha == float(w.std()) and torch.equal(signed, w.std() * torch.sign(w))


def test_batches_are_drawn_where_their_generator_lives():
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        generator = rng.seeded(5, tracer.device)
        batch = next(training.batch_indices(100, 10, generator, tracer.device))
        order = training.BatchOrder(100, 10, [generator, rng.seeded(6, tracer.device)], tracer.device)
        order.advance()
        members = order.indices()
        assert tracer.on_device(batch) and tracer.on_device(members)
    tracer.check()
    assert isinstance(generator, DeviceGenerator)


def test_the_batch_order_reaches_the_device_ahead_and_asynchronously():
    """CPU generators (the ``rng`` streams): each epoch's permutations are drawn on the host (ahead, in a thread) and
    copied from pinned memory without a sync; the indices are the CPU's."""
    generators = [rng.stream(seed, "data order") for seed in (1, 2)]
    expected = training.BatchOrder(130, 20, [rng.stream(seed, "data order") for seed in (1, 2)])
    with DeviceTracer() as tracer:
        order = training.BatchOrder(130, 20, generators, tracer.device)
        steps = []
        for _ in range(13):  # two epochs and one step
            order.advance()
            steps.append(order.indices())
        assert all(tracer.on_device(indices) for indices in steps)
    tracer.check()
    assert tracer.syncs == [] and order._ahead is not None
    for indices in steps:
        expected.advance()
        assert torch.equal(indices, expected.indices())


def test_a_criterion_start_mask_trains_on_the_run_device(data):
    """``supermask.start=criterion`` pre-trains the dense net on the Supermask run's device."""
    args = ("lenet300_100", 1, data, 20, 1.2e-3, 60, 10)
    init, final, names = start_mask.dense_trajectory(*args, rng.stream(1, "start data order"))
    with DeviceTracer() as tracer:
        traced = start_mask.dense_trajectory(*args, rng.stream(1, "start data order"), device=tracer.device)
        assert all(tracer.on_device(t) for state in traced[:2] for t in state.values())
    tracer.check()
    assert tracer.steps == 20 and traced[2] == names
    assert all(torch.equal(traced[1][k], final[k]) and torch.equal(traced[0][k], init[k]) for k in init)


# --------------------------------------------------------------------------------- the checker can fail


def short_fit(tracer: DeviceTracer) -> None:
    """Four steps of a LeNet on random device data, with an evaluation every two."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(120, 1, 28, 28, generator=gen), torch.randint(0, 10, (120,), generator=gen)
    net = models.build("lenet300_100", seed=1, kind="masked").to(tracer.device)
    x, y = x.to(tracer.device), y.to(tracer.device)
    training.fit(net, training.make_optimizer(net), (x, y), (x, y), 4, 60, 2, rng.seeded(1))


def planted_step(bug):
    """``training.train_step`` with ``bug(loss)`` added at its end."""
    step = training.train_step

    def train_step(model, optimizer, x, y):
        loss = step(model, optimizer, x, y)
        return bug(loss)

    return train_step


PLANTED = {
    "mixing": lambda loss: (loss + torch.zeros(1))[0],  # a host tensor in a device op
    "step sync": lambda loss: loss * float(loss),  # float() of a device tensor in the step
}


@pytest.mark.parametrize("kind", list(PLANTED))
def test_the_checker_fails_on_a_planted_bug_in_the_step(monkeypatch, kind):
    with DeviceTracer(forbid_step_syncs=True) as clean:
        short_fit(clean)
    clean.check()  # the real step: no mixing, no host sync
    monkeypatch.setattr(training, "train_step", planted_step(PLANTED[kind]))
    with DeviceTracer(forbid_step_syncs=True) as tracer:
        short_fit(tracer)
    with pytest.raises(AssertionError, match=rf"4 x {kind}.* in the step at tests/test_device_tracer.py"):
        tracer.check()


def planted_randperm(tracer):
    """The batch order as ``training.batch_indices`` drew it before: no ``device=``, so a device generator drew on
    the host (a CUDA generator fails there)."""
    torch.randperm(10, generator=rng.seeded(1, tracer.device)).to(tracer.device)


PLANTED_ANYWHERE = {
    "generator": planted_randperm,
    "generator ": lambda tracer: torch.rand(3, generator=torch.Generator(), device=tracer.device),  # the other way
    "numpy": lambda tracer: torch.ones(3).to(tracer.device).numpy(),
    "non-blocking copy to host": lambda tracer: torch.ones(3).to(tracer.device).to("cpu", non_blocking=True),
    "non-blocking copy from pageable memory": lambda tracer: torch.zeros(3, device=tracer.device).copy_(
        torch.ones(3), non_blocking=True),
    "mixing": lambda tracer: torch.ones(3).to(tracer.device).index_select(0, torch.tensor([0, 1])),
}


@pytest.mark.parametrize("kind", list(PLANTED_ANYWHERE))
def test_the_checker_fails_on_a_planted_bug_anywhere(kind):
    with DeviceTracer() as tracer:
        PLANTED_ANYWHERE[kind](tracer)
    with pytest.raises(AssertionError, match=rf"1 device violation.*\n  1 x {kind.strip()}: "):
        tracer.check()


def test_syncs_are_counted_by_kind_and_phase():
    with DeviceTracer() as tracer:
        x = torch.arange(6.0).to(tracer.device)
        values = (float(x.sum()), bool(x.any()), x.tolist(), x.cpu(), x[x > 2], x.nonzero())
    tracer.check()
    assert values[0] == 15.0 and tracer.on_device(values[4]) and not tracer.on_device(values[3])
    kinds = [(e.kind, e.phase) for e in tracer.syncs]
    assert kinds == [("to device", "outside"), ("item", "outside"), ("item", "outside"), ("to host", "outside"),
                     ("to host", "outside"), ("data-dependent shape", "outside"),
                     ("data-dependent shape", "outside")], kinds
