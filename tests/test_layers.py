"""Masked layers: effective weight w*m + frozen*(1-m); pruned weights never move; kept weights train."""

import copy
import io

import pytest
import torch
from torch.nn import functional as F

from masking import training
from masking.layers import MaskedConv2d, MaskedLinear, guard_optimizer


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def masked(layer_cls, seed=0):
    torch.manual_seed(seed)
    layer = MaskedLinear(20, 12) if layer_cls is MaskedLinear else MaskedConv2d(3, 5, kernel_size=3, padding=1)
    shape = layer.weight.shape
    mask = torch.rand(shape, generator=gen(seed)) < 0.5
    frozen = torch.randn(shape, generator=gen(seed + 1))  # nonzero frozen values, as with mask-0 'init'
    layer.set_mask(mask, frozen=frozen)
    return layer, mask, frozen


def inputs(layer):
    return torch.randn(8, 20) if isinstance(layer, MaskedLinear) else torch.randn(8, 3, 6, 6)


@pytest.mark.parametrize("layer_cls", [MaskedLinear, MaskedConv2d])
def test_effective_weight_formula(layer_cls):
    layer, mask, frozen = masked(layer_cls)
    w = torch.randn(layer.weight.shape)
    layer.set_mask(mask, frozen=frozen, start=w)
    m = mask.float()
    effective = w * m + frozen * (1 - m)
    x = inputs(layer)
    expected = F.linear(x, effective, layer.bias) if layer_cls is MaskedLinear else \
        F.conv2d(x, effective, layer.bias, padding=1)
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("layer_cls", [MaskedLinear, MaskedConv2d])
@pytest.mark.parametrize("make_opt", [
    lambda layer: training.make_optimizer(layer, "adam", 0.05),
    lambda layer: torch.optim.Adam(layer.parameters(), lr=0.05),  # default (foreach) Adam, unguarded
    lambda layer: torch.optim.SGD(layer.parameters(), lr=0.05, momentum=0.9),
    lambda layer: training.make_optimizer(layer, "adam", 0.05, weight_decay=0.1),  # guarded
], ids=["adam_fused", "adam_default", "sgd_momentum", "adam_weight_decay"])
def test_pruned_weights_bit_identical_after_100_steps(layer_cls, make_opt):
    layer, mask, frozen = masked(layer_cls)
    before = layer.weight.detach().clone()
    opt = make_opt(layer)
    for _ in range(100):
        opt.zero_grad()
        (layer(inputs(layer)) ** 2).mean().backward()
        opt.step()
    after = layer.weight.detach()
    assert torch.equal(after[~mask], before[~mask])
    assert torch.equal(after[~mask], frozen[~mask])
    assert (after[mask] != before[mask]).float().mean() > 0.99, "kept weights train"


def test_weight_decay_moves_pruned_weights_unless_guarded():
    """The guard is what holds pruned weights under weight decay (a zero gradient alone does not)."""
    for guard in (False, True):
        layer, mask, frozen = masked(MaskedLinear)
        opt = torch.optim.AdamW(layer.parameters(), lr=0.05, weight_decay=0.5)
        if guard:
            guard_optimizer(opt, layer)
        for _ in range(10):
            opt.zero_grad()
            layer(inputs(layer)).pow(2).mean().backward()
            opt.step()
        assert torch.equal(layer.weight.detach()[~mask], frozen[~mask]) == guard


def test_pruned_gradient_is_zero():
    layer, mask, _ = masked(MaskedLinear)
    layer(inputs(layer)).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all()
    assert (layer.weight.grad[mask] != 0).float().mean() > 0.9


def test_deepcopy_and_state_dict_keep_the_guarantee():
    layer, mask, frozen = masked(MaskedLinear)
    clone = copy.deepcopy(layer)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    loaded = MaskedLinear(20, 12)
    loaded.load_state_dict(torch.load(buffer, map_location="cpu"))
    assert torch.equal(loaded.mask, mask) and torch.equal(loaded.weight, layer.weight)
    for copy_ in (clone, loaded):
        opt = torch.optim.Adam(copy_.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            copy_(inputs(copy_)).sum().backward()
            opt.step()
        assert torch.equal(copy_.weight.detach()[~mask], frozen[~mask])


def test_a_mask_set_before_a_move_follows_the_layer():
    """``.to(dtype)`` / ``.to(device)`` after ``set_mask``: the gradient hook's float mask moves with the weight
    (the meta device stands in for a GPU here; tests/test_devices.py moves to CUDA where there is one)."""
    layer, mask, frozen = masked(MaskedLinear)
    layer.to(torch.float64)
    assert layer._keep.dtype == torch.float64
    layer(inputs(layer).double()).sum().backward()
    assert (layer.weight.grad[~mask] == 0).all() and layer.weight.grad.dtype == torch.float64
    layer.to("meta")
    assert layer._keep.device.type == "meta"


def test_full_mask_is_a_plain_layer():
    torch.manual_seed(0)
    layer = MaskedLinear(20, 12)
    assert layer.mask.all() and layer._keep is None
    assert layer.num_kept == 240


def test_bad_mask_rejected():
    layer = MaskedLinear(20, 12)
    with pytest.raises(ValueError, match="torch.bool tensor of shape \\(12, 20\\)"):
        layer.set_mask(torch.ones(12, 20))
