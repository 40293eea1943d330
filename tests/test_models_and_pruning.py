"""The paper's networks, the pruning schedule, whole-network rounds, tickets and hashes."""

import pytest
import torch

from masking import hashing, initializers, models, pruning, training, treatments


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


SHAPES = {
    "lenet300_100": [(300, 784), (100, 300), (10, 100)],
    "conv2": [(64, 3, 3, 3), (64, 64, 3, 3), (256, 16 * 16 * 64), (256, 256), (10, 256)],
    "conv4": [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3), (256, 8 * 8 * 128), (256, 256),
              (10, 256)],
    "conv6": [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3), (256, 128, 3, 3),
              (256, 256, 3, 3), (256, 4 * 4 * 256), (256, 256), (10, 256)],
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_architectures_match_the_protocol(name):
    net = models.build(name, seed=0)
    assert [tuple(layer.weight.shape) for layer in net.prunable_layers().values()] == SHAPES[name]
    x = torch.rand(2, *net.arch.input_shape)
    assert net(x).shape == (2, 10)
    for layer in net.prunable_layers().values():
        layer.requires_grad_(False)
        assert (layer.bias == 0).all()
        assert abs(float(layer.weight.std()) / initializers.glorot_std(layer.weight.shape) - 1) < 0.1
        assert abs(float(layer.weight.mean())) < 0.1 * initializers.glorot_std(layer.weight.shape)


def test_paper_settings_and_rates():
    assert models.names() == ["lenet300_100", "conv2", "conv4", "conv6", "resnet20"]
    assert models.spec("lenet300_100").rates == {"fc": 0.2, "output": 0.1}
    assert models.spec("conv6").rates["conv"] == 0.15 and models.spec("conv4").rates["conv"] == 0.1
    assert (models.spec("conv2").lr, models.spec("conv2").iterations) == (2e-4, 20_000)
    with pytest.raises(ValueError, match="unknown architecture 'conv3'; valid choices: lenet300_100, conv2"):
        models.spec("conv3")
    with pytest.raises(ValueError, match="unknown model kind 'sparse'"):
        models.build("conv2", kind="sparse")


def test_same_seed_same_init_whatever_the_kind():
    hashes = set()
    for kind in models.KINDS:
        net = models.build("conv2", seed=4, kind=kind)
        hashes.add(hashing.state_hash({n: l.weight for n, l in net.prunable_layers().items()}))
    assert len(hashes) == 1
    other = models.build("conv2", seed=5)
    assert hashing.state_hash({n: l.weight for n, l in other.prunable_layers().items()}) not in hashes


def test_state_hash_is_order_free_and_sensitive():
    state = models.build("lenet300_100", seed=0).state_dict()
    h = hashing.state_hash(state)
    assert h == hashing.state_hash(dict(reversed(list(state.items()))))
    changed = dict(state)
    changed["fcs.2.bias"] = state["fcs.2.bias"].clone()
    changed["fcs.2.bias"][3] = 1e-30
    assert hashing.state_hash(changed) != h and len(h) == 64


def _sizes_and_rates(name):
    net = models.build(name, kind="masked")
    sizes = {n: l.weight.numel() for n, l in net.prunable_layers().items()}
    return net, sizes, pruning.layer_rates(net.layer_roles(), net.arch.rates)


def test_schedule_of_lenet():
    _, sizes, rates = _sizes_and_rates("lenet300_100")
    sched = pruning.schedule(sizes, rates, 24)
    assert sched[0] == 100.0
    assert all(a > b for a, b in zip(sched, sched[1:]))
    assert sched[1] == pytest.approx(100 * (235200 * 0.8 + 30000 * 0.8 + 1000 * 0.9) / 266200)
    assert 0.45 < sched[24] < 0.55  # the paper's "about 0.5% of FC weights remain"


@pytest.mark.parametrize("name,rounds", [("lenet300_100", 6), ("conv6", 3)])
def test_pruning_rounds_follow_the_schedule_and_nest(name, rounds):
    net, sizes, rates = _sizes_and_rates(name)
    init = {n: l.weight.detach().clone() for n, l in net.prunable_layers().items()}
    mask = pruning.Mask.ones(init)
    g = gen(0)
    expected = pruning.schedule(sizes, rates, rounds)
    for k in range(1, rounds + 1):
        final = {n: w + 0.01 * torch.randn(w.shape, generator=g) for n, w in init.items()}
        new = pruning.prune("magnitude_increase", init, final, mask, rates, g)
        assert new.is_subset_of(mask) and not mask.is_subset_of(new)
        assert new.percent_remaining == pytest.approx(expected[k], abs=1e-9)
        for n in new:
            assert int(new[n].sum()) == pruning.kept_after(sizes[n], rates[n], k)
        mask = new
    assert set(mask) == {n for n in net.state_dict() if n.endswith("weight")}, "biases are never pruned"


def test_layer_rates_need_every_role():
    net = models.build("conv2")
    with pytest.raises(ValueError, match=r"no prune rate given for layer role\(s\) \['conv'\]"):
        pruning.layer_rates(net.layer_roles(), {"fc": 0.2, "output": 0.1})
    with pytest.raises(ValueError, match="prune fraction must be in"):
        pruning.layer_rates(net.layer_roles(), {"conv": 1.2, "fc": 0.2, "output": 0.1})


def test_mask_requires_bool():
    with pytest.raises(ValueError, match="must be torch.bool"):
        pruning.Mask({"w": torch.ones(3)})


def _trained_lenet(seed):
    """A few real Adam steps on seeded random data: a (w_init, w_final) pair."""
    net = models.build("lenet300_100", seed=seed, kind="masked")
    init = {k: v.clone() for k, v in net.state_dict().items()}
    g = gen(seed)
    x, y = torch.rand(600, 1, 28, 28, generator=g), torch.randint(0, 10, (600,), generator=g)
    opt = training.make_optimizer(net, "adam", 1.2e-3)
    order = training.batch_indices(600, 60, g)
    for _ in range(20):
        idx = next(order)
        training.train_step(net, opt, x[idx], y[idx])
    return net, init, {k: v.clone() for k, v in net.state_dict().items()}, (x, y)


@pytest.mark.parametrize("mask1,mask0", [("original", "zero"), ("signed_constant", "init"),
                                         ("reshuffle", "zero_if_toward_zero")])
def test_apply_ticket(mask1, mask0):
    net, init, final, _ = _trained_lenet(0)
    roles = net.layer_roles()
    mask = pruning.prune("large_final", init, final, pruning.Mask.ones({n: init[n] for n in roles}),
                         pruning.layer_rates(roles, net.arch.rates), gen(1))
    pruning.apply_ticket(net, init, final, mask, mask1, mask0, gen(2))
    state = net.state_dict()
    g = gen(2)
    for name in sorted(mask):
        start = treatments.mask1(mask1, init[name], mask[name], g)
        frozen = treatments.mask0(mask0, init[name], final[name], mask[name], g)
        assert torch.equal(state[name], start + frozen)
        assert torch.equal(state[name.replace("weight", "bias")], init[name.replace("weight", "bias")])


def test_apply_ticket_validates_before_touching_the_model():
    net, init, final, _ = _trained_lenet(0)
    before = hashing.state_hash(net.state_dict())
    mask = pruning.Mask.ones({n: init[n] for n in net.layer_roles()})
    with pytest.raises(ValueError, match="unknown mask-0 action 'none'"):
        pruning.apply_ticket(net, init, final, mask, "original", "none")
    assert hashing.state_hash(net.state_dict()) == before


def test_same_seed_same_training_bit_for_bit():
    a = _trained_lenet(3)[2]
    b = _trained_lenet(3)[2]
    assert hashing.state_hash(a) == hashing.state_hash(b)
    assert hashing.state_hash(a) != hashing.state_hash(_trained_lenet(4)[2])


def test_batch_indices_cover_each_epoch_once():
    order = training.batch_indices(100, 30, gen(0))
    epoch = torch.cat([next(order) for _ in range(3)])
    assert len(set(epoch.tolist())) == 90
    with pytest.raises(ValueError, match="batch size must be in \\[1, 100\\], got 0"):
        next(training.batch_indices(100, 0, gen(0)))
