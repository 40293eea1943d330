"""Populations: members trained in lockstep equal their single runs (float64), keep their masks, fail alone."""

from __future__ import annotations

import math

import pytest
import torch

from masking import models, population, pruning, rng, supermask, training


def data(shape, n=700, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen).to(dtype)
    y = torch.randint(0, 10, (n,), generator=gen)
    return (x[200:], y[200:]), (x[:200], y[:200])


def ticket(arch, seed, fraction, mask0, shape, dtype=torch.float64):
    """A masked net of ``arch`` from ``seed``, ``fraction`` of each layer pruned at random, in ``dtype``."""
    net = models.build(arch, seed=seed, kind="masked", input_shape=shape)
    init = net.state_dict()
    names = net.layer_roles()
    mask = pruning.prune("random", init, init, pruning.Mask.ones({n: init[n] for n in names}),
                         {n: fraction for n in names}, rng.stream(seed, "prune"))
    pruning.apply_ticket(net, init, init, mask, "original", mask0, rng.stream(seed, "treatment"))
    return net.to(dtype)


MEMBERS = [(1, 0.5, "init"), (2, 0.0, "zero"), (3, 0.3, "random_zero")]  # seed, fraction pruned, mask-0


def single_fit(arch, shape, member, train, val, iterations=40, eval_every=10, lr=1e-3):
    net = ticket(arch, *member, shape)
    optimizer = training.make_optimizer(net, "adam", lr)
    result = training.fit(net, optimizer, train, val, iterations, 20, eval_every, rng.stream(member[0], "data order"))
    return net, result


@pytest.mark.parametrize("arch,shape", [("lenet300_100", (1, 28, 28)), ("conv2", (3, 4, 4))])
def test_float64_members_equal_their_single_runs(arch, shape):
    train, val = data(shape)
    stack = population.Stack([ticket(arch, *m, shape) for m in MEMBERS], "float64")
    optimizer = population.make_optimizer(stack, "adam", 1e-3)
    results = population.fit(stack, optimizer, train, val, 40, 20, 10,
                             [rng.stream(m[0], "data order") for m in MEMBERS])
    for k, member in enumerate(MEMBERS):
        net, single = single_fit(arch, shape, member, train, val)
        got = results[k]
        assert got.best_iteration == single.best_iteration
        assert len(got.curve) == len(single.curve) == 4
        for a, b in zip(got.curve, single.curve):
            assert a["iteration"] == b["iteration"]
            assert a["val_acc"] == b["val_acc"]
            assert abs(a["val_loss"] - b["val_loss"]) < 1e-9
            # training.fit sums its train losses in a float32 scalar: equal to that rounding
            assert math.isclose(a["train_loss"], b["train_loss"], rel_tol=1e-6)
        state = stack.member_state(k)
        final = net.state_dict()
        for name, tensor in final.items():
            if name.endswith(".mask"):
                assert torch.equal(state[name], tensor), name
            else:
                assert float((state[name] - tensor).abs().max()) < 1e-9, name
            if name.endswith(".weight"):  # pruned weights kept their frozen values, bit for bit
                pruned = ~final[name.replace(".weight", ".mask")]
                assert torch.equal(state[name][pruned], tensor[pruned]), name
        loaded = ticket(arch, *member, shape)
        loaded.load_state_dict(got.best_state)
        for name, tensor in single.best_state.items():
            assert float((loaded.state_dict()[name].double() - tensor.double()).abs().max()) < 1e-9, name
        (val_loss, val_acc), = population.evaluate(population.Stack([net], "float64"), *val)
        assert abs(val_loss - single.curve[-1]["val_loss"]) < 1e-9 and val_acc == single.curve[-1]["val_acc"]


@pytest.mark.parametrize("fused", [True, False])
def test_one_adam_over_the_stack_is_one_adam_per_member(fused):
    gen = torch.Generator().manual_seed(0)
    members = [torch.randn(30, 20, generator=gen) for _ in range(3)]
    stacked = torch.nn.Parameter(torch.stack(members))
    singles = [torch.nn.Parameter(m.clone()) for m in members]
    opt_stack = torch.optim.Adam([stacked], lr=1e-2, fused=fused)
    opts = [torch.optim.Adam([p], lr=1e-2, fused=fused) for p in singles]
    for _ in range(20):
        grads = [torch.randn(30, 20, generator=gen) for _ in members]
        stacked.grad = torch.stack(grads)
        opt_stack.step()
        for p, g, opt in zip(singles, grads, opts):
            p.grad = g.clone()
            opt.step()
    for k, p in enumerate(singles):
        assert torch.equal(stacked.detach()[k], p.detach())  # bit for bit, float32


def test_frozen_weights_stay_bit_identical_in_float32_with_weight_decay():
    shape = (1, 28, 28)
    train, val = data(shape, dtype=torch.float32)
    nets = [ticket("lenet300_100", *m, shape, dtype=torch.float32) for m in MEMBERS]
    before = [net.state_dict() for net in nets]
    stack = population.Stack(nets)
    optimizer = population.make_optimizer(stack, "adam", 1e-2, weight_decay=0.1)
    population.fit(stack, optimizer, train, val, 20, 20, 10, [rng.stream(m[0], "data order") for m in MEMBERS])
    for k, state in enumerate(before):
        after = stack.member_state(k)
        for name in ("fcs.0.weight", "fcs.1.weight", "fcs.2.weight"):
            pruned = ~state[name.replace(".weight", ".mask")]
            assert torch.equal(after[name][pruned], state[name][pruned])
            assert not torch.equal(after[name][~pruned], state[name][~pruned])  # kept weights trained


def test_a_member_whose_loss_goes_bad_fails_alone():
    shape = (1, 28, 28)
    train, val = data(shape)
    nets = [ticket("lenet300_100", *m, shape) for m in MEMBERS]
    with torch.no_grad():
        nets[1].fcs[0].bias.fill_(float("nan"))
    stack = population.Stack(nets)
    results = population.fit(stack, population.make_optimizer(stack, "adam", 1e-3), train, val, 40, 20, 10,
                             [rng.stream(m[0], "data order") for m in MEMBERS])
    assert isinstance(results[1], population.MemberFailed) and "iteration 10" in str(results[1])
    for k in (0, 2):
        _, single = single_fit("lenet300_100", shape, MEMBERS[k], train, val)
        assert [p["val_acc"] for p in results[k].curve] == [p["val_acc"] for p in single.curve]


def test_members_must_share_the_architecture():
    with pytest.raises(ValueError, match="share the architecture"):
        population.Stack([models.build("lenet300_100", kind="masked"), models.build("conv2", kind="masked")])
    with pytest.raises(ValueError, match="valid choices: float32, float64"):
        population.dtype_of("float16")


def supermask_net(seed, rescale, shape, dtype=torch.float64):
    net = models.build("lenet300_100", seed=seed, kind="supermask", input_shape=shape, rescale=rescale).to(dtype)
    supermask.set_generator(net, rng.stream(seed, "mask samples"))
    return net


def test_float64_supermask_members_equal_their_single_runs():
    shape = (1, 28, 28)
    train, val = data(shape)
    members = [(1, False), (2, True)]  # seed, dynamic weight rescaling
    stack = population.Stack([supermask_net(*m, shape) for m in members])
    results = population.fit(stack, population.make_optimizer(stack, "adam", 0.1), train, val, 30, 20, 10,
                             [rng.stream(seed, "data order") for seed, _ in members])
    for k, member in enumerate(members):
        net = supermask_net(*member, shape)
        single = training.fit(net, training.make_optimizer(net, "adam", 0.1), train, val, 30, 20, 10,
                              rng.stream(member[0], "data order"))
        assert results[k].best_iteration == single.best_iteration
        for a, b in zip(results[k].curve, single.curve, strict=True):
            assert a["val_acc"] == b["val_acc"] and abs(a["val_loss"] - b["val_loss"]) < 1e-9
        state = stack.member_state(k)
        for name, tensor in net.state_dict().items():
            assert float((state[name] - tensor).abs().max()) < 1e-9, name
        assert abs(stack.expected_density(k) - supermask.expected_density(net)) < 1e-12
