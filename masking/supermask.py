"""Supermask layers: frozen weights, one trainable score per weight, a Bernoulli mask sampled on every pass.

Forward: ``p = sigmoid(score)``, ``m ~ Bernoulli(p)`` and the layer computes with ``weight * m`` (times
``numel / m.sum()`` with dynamic weight rescaling). Backward: the straight-through estimator passes the gradient
of ``m`` unchanged to ``p``, so ``d loss / d score = d loss / d m * p * (1 - p)``.

Sampling draws from the layer's ``generator`` when one is set (``set_generator``), so a seed fixes the masks.
Evaluation uses one mask sample for a whole pass over a data set: inside ``fixed_masks(model)`` each layer draws
its mask once and reuses it. ``evaluate`` averages test accuracy over N such samples (accuracies, not predictions).
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from masking.evaluation import accuracy


def bernoulli(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A {0, 1} sample of Bernoulli(probs) as ``uniform < probs``: the same law as ``torch.bernoulli``, 3x faster
    on CPU."""
    device = probs.device if generator is None else generator.device
    uniform = torch.rand(probs.shape, generator=generator, device=device)
    return (uniform.to(probs.device) < probs).to(probs.dtype)


class _BernoulliStraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return bernoulli(probs, generator)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def sample_mask(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A {0, 1} float sample of Bernoulli(probs) whose gradient passes straight through to ``probs``."""
    return _BernoulliStraightThrough.apply(probs, generator)


class SupermaskMixin:
    """Turns a layer's ``weight`` into a frozen buffer and adds the trainable ``scores``."""

    weight: torch.Tensor

    def _init_supermask(self, score_init: float = 0.0, rescale: bool = False) -> None:
        weight = self.weight.detach().clone()
        del self.weight
        self.register_buffer("weight", weight)
        self.scores = nn.Parameter(torch.full_like(weight, float(score_init)))
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.rescale = bool(rescale)
        self.generator: torch.Generator | None = None
        self._fixed: torch.Tensor | None = None

    def probabilities(self) -> torch.Tensor:
        return torch.sigmoid(self.scores)

    def masked_weight(self) -> torch.Tensor:
        mask = self._fixed if self._fixed is not None else sample_mask(self.probabilities(), self.generator)
        weight = self.weight * mask
        if self.rescale:
            weight = weight * (mask.numel() / mask.sum().clamp_min(1.0)).detach()
        return weight

    def expected_density(self) -> float:
        return float(self.probabilities().detach().mean())


class SupermaskLinear(SupermaskMixin, nn.Linear):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, score_init: float = 0.0,
                 rescale: bool = False, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self._init_supermask(score_init, rescale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight(), self.bias)


class SupermaskConv2d(SupermaskMixin, nn.Conv2d):
    def __init__(self, *args, score_init: float = 0.0, rescale: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_supermask(score_init, rescale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


def supermask_layers(model: nn.Module) -> dict[str, SupermaskMixin]:
    return {name: m for name, m in model.named_modules() if isinstance(m, SupermaskMixin)}


def set_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every Supermask layer of ``model`` sample its masks from ``generator``."""
    for layer in supermask_layers(model).values():
        layer.generator = generator


def set_signed_constant(model: nn.Module) -> None:
    """Replace each Supermask layer's weights by ``std(weight) * sign(weight)`` (the signed-constant weights)."""
    with torch.no_grad():
        for layer in supermask_layers(model).values():
            layer.weight.copy_(layer.weight.std() * torch.sign(layer.weight))


def expected_density(model: nn.Module) -> float:
    """Expected fraction of weights kept: mean sigmoid(score) over all Supermask weights."""
    layers = supermask_layers(model).values()
    total = sum(layer.scores.numel() for layer in layers)
    return sum(float(layer.probabilities().detach().sum()) for layer in layers) / total


@contextlib.contextmanager
def fixed_masks(model: nn.Module, generator: torch.Generator | None = None) -> Iterator[None]:
    """Within the block, each Supermask layer uses one mask sample drawn on entry (from ``generator`` when given)."""
    layers = list(supermask_layers(model).values())
    try:
        with torch.no_grad():
            for layer in layers:
                layer._fixed = bernoulli(layer.probabilities(), generator or layer.generator)
        yield
    finally:
        for layer in layers:
            layer._fixed = None


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 10,
             generator: torch.Generator | None = None, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean, std) of accuracy over ``samples`` independent mask samples; each sample scores the whole data set."""
    accs = []
    for _ in range(samples):
        with fixed_masks(model, generator):
            accs.append(accuracy(model, x, y, batch_size))
    return statistics.fmean(accs), (statistics.stdev(accs) if samples > 1 else 0.0)
