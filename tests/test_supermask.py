"""Supermask layers: Bernoulli(sigmoid(score)) sampling, straight-through gradient, rescaling, evaluation."""

import math

import pytest
import torch
from torch.nn import functional as F

from masking import evaluation, models, supermask, training
from masking.supermask import SupermaskConv2d, SupermaskLinear


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_sampling_frequency_matches_sigmoid_score():
    """Scores set to logit(p) for p in {0.05, 0.3, 0.5, 0.8, 0.97}, 400 weights each, 500 forward passes.

    Tolerance: each group's pooled frequency (200,000 draws) within 5 standard errors of p, and every single
    weight's frequency (500 draws) within 5.5 standard errors (p = 2e-8 per weight of a false alarm).
    """
    probs = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.97]).repeat_interleave(400).view(20, 100)
    layer = SupermaskLinear(100, 20)
    with torch.no_grad():
        layer.scores.copy_(torch.log(probs / (1 - probs)))
        layer.weight.fill_(1.0)
    layer.generator = gen(1)
    eye = torch.eye(100)
    n = 500
    counts = torch.zeros(20, 100)
    with torch.no_grad():
        for _ in range(n):
            counts += (layer(eye) - layer.bias).T  # row j of the output for input e_i is mask[j, i]
    freq = counts / n
    se = torch.sqrt(probs * (1 - probs) / n)
    assert ((freq - probs).abs() <= 5.5 * se).all()
    for group in range(5):
        rows = slice(group * 4, group * 4 + 4)
        p = float(probs[rows].mean())
        assert abs(float(freq[rows].mean()) - p) <= 5 * math.sqrt(p * (1 - p) / (n * 400))


def test_a_fresh_mask_every_forward_pass():
    layer = SupermaskLinear(50, 40)
    x = torch.randn(4, 50)
    assert not torch.equal(layer(x), layer(x))


def test_straight_through_gradient():
    """d loss / d score = (d loss / d effective weight) * weight * p * (1 - p), with the sampled mask."""
    torch.manual_seed(0)
    layer = SupermaskLinear(6, 4)
    with torch.no_grad():
        layer.scores.copy_(torch.randn(4, 6))
    x, c = torch.randn(3, 6), torch.randn(3, 4)
    layer.generator = gen(9)
    loss = (layer(x) * c).sum()
    loss.backward()
    p = torch.sigmoid(layer.scores.detach())
    mask = supermask.bernoulli(p, gen(9))  # the same draw the forward pass made
    d_effective = c.T @ x  # d loss / d (weight * mask)
    expected = d_effective * layer.weight * p * (1 - p)
    torch.testing.assert_close(layer.scores.grad, expected)
    assert 0 < float(mask.mean()) < 1


def test_dynamic_rescaling_multiplies_by_size_over_ones():
    torch.manual_seed(0)
    plain, scaled = SupermaskLinear(30, 10), SupermaskLinear(30, 10, rescale=True)
    scaled.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.bias.zero_(), scaled.bias.zero_()
    x = torch.randn(5, 30)
    plain.generator, scaled.generator = gen(4), gen(4)
    ones = float(supermask.bernoulli(torch.full((10, 30), 0.5), gen(4)).sum())
    torch.testing.assert_close(scaled(x), plain(x) * (300 / ones))


def test_weights_frozen_scores_train():
    net = models.build("lenet300_100", seed=0, kind="supermask")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = training.make_optimizer(net, "adam", 0.1)
    assert {id(p) for g in opt.param_groups for p in g["params"]} == \
        {id(layer.scores) for layer in supermask.supermask_layers(net).values()}
    x, y = torch.rand(60, 1, 28, 28), torch.randint(0, 10, (60,))
    for _ in range(3):
        training.train_step(net, opt, x, y)
    after = net.state_dict()
    for name in before:
        if name.endswith("scores"):
            assert not torch.equal(before[name], after[name])
        else:
            assert torch.equal(before[name], after[name]), name


def test_score_init_and_expected_density():
    net = models.build("conv2", seed=0, kind="supermask")
    assert supermask.expected_density(net) == pytest.approx(0.5)
    net = models.build("conv2", seed=0, kind="supermask", score_init=2.0)
    assert supermask.expected_density(net) == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)


def test_signed_constant_weights():
    dense = models.build("lenet300_100", seed=3)
    net = models.build("lenet300_100", seed=3, kind="supermask", signed_constant=True)
    for name, layer in net.prunable_layers().items():
        w = dense.state_dict()[name]
        assert torch.equal(layer.weight, w.std() * torch.sign(w))


def test_conv_supermask_matches_masked_conv():
    layer = SupermaskConv2d(3, 4, kernel_size=3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with supermask.fixed_masks(layer, gen(2)):
        out = layer(x)
        assert torch.equal(out, layer(x)), "one sample for the whole block"
        mask = layer._fixed
    torch.testing.assert_close(out, F.conv2d(x, layer.weight * mask, layer.bias, padding=1))


def test_evaluate_averages_accuracies_over_samples():
    torch.manual_seed(0)
    net = models.build("lenet300_100", seed=0, kind="supermask")
    x, y = torch.rand(200, 1, 28, 28), torch.randint(0, 10, (200,))
    mean, std = supermask.evaluate(net, x, y, samples=10, generator=gen(5))
    g = gen(5)
    accs = []
    for _ in range(10):
        with supermask.fixed_masks(net, g):
            accs.append(evaluation.accuracy(net, x, y))
    assert mean == pytest.approx(sum(accs) / 10)
    assert std == pytest.approx(torch.tensor(accs).std().item())
    assert len(set(accs)) > 1


def test_all_kept_supermask_is_the_dense_net():
    dense = models.build("lenet300_100", seed=2)
    net = models.build("lenet300_100", seed=2, kind="supermask", score_init=50.0)
    x, y = torch.rand(300, 1, 28, 28), torch.randint(0, 10, (300,))
    mean, std = supermask.evaluate(net, x, y, samples=3)
    assert mean == evaluation.accuracy(dense, x, y) and std == 0.0


def test_seeded_samples_are_reproducible():
    a = models.build("lenet300_100", seed=1, kind="supermask")
    b = models.build("lenet300_100", seed=1, kind="supermask")
    supermask.set_generator(a, gen(11))
    supermask.set_generator(b, gen(11))
    x = torch.rand(10, 1, 28, 28)
    assert torch.equal(a(x), b(x))
