"""Supermask layers: frozen weights, one trainable score per weight, a Bernoulli mask sampled on every pass.

Forward: ``p = sigmoid(score)``, ``m ~ Bernoulli(p)`` and the layer computes with ``weight * m`` (times
``numel / m.sum()`` with dynamic weight rescaling). Backward: the straight-through estimator passes the gradient
of ``m`` unchanged to ``p``, so ``d loss / d score = d loss / d m * p * (1 - p)``.

Sampling draws from the layer's ``generator`` when one is set (``set_generator``), so a seed fixes the masks.
Evaluation uses one mask sample for a whole pass over a data set: inside ``fixed_masks(model)`` each layer draws
its mask once and reuses it. ``evaluate`` averages test accuracy over N such samples (accuracies, not predictions).

Two questions the paper's authors left open have their tools here:

* starting from a mask (``scores_from_mask``): scores ``logit(p_keep)`` where a given mask keeps a weight and
  ``logit(p_drop)`` where it prunes it, instead of one ``score_init`` everywhere; ``mask_change`` then says how far
  the learned mask (``expected_mask``: keep probability above 0.5) moved from that start;
* sign randomisation (``sign_variants``, ``resigned``): a learned Supermask evaluated over the same weight
  magnitudes with random signs, with every sign flipped, and over signed constants (``std * sign``, the signs
  kept): does the mask encode the signs?
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from masking.evaluation import accuracy
from masking.rng import random_signs
from masking.treatments import layer_alpha


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
            layer.weight.copy_(resigned(layer.weight, "signed_constant"))


def expected_density(model: nn.Module) -> float:
    """Expected fraction of weights kept: mean sigmoid(score) over all Supermask weights."""
    layers = supermask_layers(model).values()
    total = sum(layer.scores.numel() for layer in layers)
    sums = torch.stack([layer.probabilities().detach().sum() for layer in layers]).tolist()  # one read
    return sum(sums) / total


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


# ------------------------------------------------------------------------------------------------ from a mask


def _layer_of(model: nn.Module, weight_name: str) -> SupermaskMixin:
    layers = supermask_layers(model)
    module = weight_name.rsplit(".", 1)[0]
    if module not in layers:
        raise ValueError(f"{weight_name!r} is not the weight of a Supermask layer; those are: "
                         f"{', '.join(f'{n}.weight' for n in layers)}")
    return layers[module]


def logit(p: float | torch.Tensor) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float32)
    return torch.log(p) - torch.log1p(-p)


def scores_from_mask(model: nn.Module, mask: dict[str, torch.Tensor], p_keep: float = 0.9,
                     p_drop: float = 0.1) -> None:
    """Start every Supermask layer's scores from ``mask`` ({weight name: bool tensor}, as lottery runs store it,
    covering every Supermask layer): keep probability ``p_keep`` where the mask keeps a weight, ``p_drop`` where it
    prunes it (scores = logit(p))."""
    for name, p in (("p_keep", p_keep), ("p_drop", p_drop)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1:
            raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {p!r}")
    missing = sorted({f"{n}.weight" for n in supermask_layers(model)} - set(mask))
    if missing:
        raise ValueError(f"the mask has no entry for {', '.join(missing)}")
    with torch.no_grad():
        for name, keep in mask.items():
            layer = _layer_of(model, name)
            if keep.shape != layer.scores.shape:
                raise ValueError(f"mask {name!r} has shape {tuple(keep.shape)}, the layer {tuple(layer.scores.shape)}")
            layer.scores.copy_(torch.where(keep.to(layer.scores.device).bool(), logit(p_keep), logit(p_drop)))


def expected_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    """The mask a Supermask most likely samples: keep probability above 0.5, by weight name."""
    return {f"{n}.weight": layer.probabilities().detach() > 0.5 for n, layer in supermask_layers(model).items()}


def mask_change(start: dict[str, torch.Tensor], model: nn.Module) -> dict[str, float]:
    """How far the learned mask moved from ``start``: the Hamming distance between ``start`` and the expected mask
    (count and fraction of all weights), the fractions of start-kept weights dropped and of start-pruned weights
    taken up, and the start mask's density."""
    now = expected_mask(model)
    start = {n: start[n].to(now[n].device).bool() for n in now}
    total = sum(m.numel() for m in now.values())
    kept = sum(int(start[n].sum()) for n in now)
    dropped = sum(int((start[n] & ~now[n]).sum()) for n in now)
    added = sum(int((~start[n] & now[n]).sum()) for n in now)
    return {"hamming": dropped + added, "hamming_fraction": (dropped + added) / total,
            "dropped_fraction": dropped / max(kept, 1), "added_fraction": added / max(total - kept, 1),
            "start_density": kept / total}


# ------------------------------------------------------------------------------------------------ signs


SIGN_VARIANTS = ("random_signs", "flipped_signs", "signed_constant")


def resigned(weight: torch.Tensor, variant: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``weight`` with its signs changed: ``random_signs`` (magnitudes kept, each sign a fair coin),
    ``flipped_signs`` (every sign flipped) or ``signed_constant`` (std(weight) * sign: magnitudes replaced, signs
    kept; the std computed on the CPU, ``treatments.layer_alpha``)."""
    if variant == "random_signs":
        return weight.abs() * random_signs(weight, generator)
    if variant == "flipped_signs":
        return -weight
    if variant == "signed_constant":
        return layer_alpha(weight) * torch.sign(weight)
    raise ValueError(f"unknown sign variant {variant!r}; valid choices: {', '.join(SIGN_VARIANTS)}")


@contextlib.contextmanager
def signs_changed(model: nn.Module, variant: str, generator: torch.Generator | None = None) -> Iterator[None]:
    """Within the block, every Supermask layer computes with ``resigned`` weights (scores, biases and batch norm
    untouched); the weights are restored on exit."""
    layers = list(supermask_layers(model).values())
    saved = [layer.weight.clone() for layer in layers]
    try:
        with torch.no_grad():
            for layer in layers:
                layer.weight.copy_(resigned(layer.weight, variant, generator))
        yield
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved):
                layer.weight.copy_(weight)


def sign_variants(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 10, draws: int = 5,
                  generator: torch.Generator | None = None) -> dict[str, float]:
    """Accuracy of the learned Supermask under each ``SIGN_VARIANTS`` entry: ``<variant>_acc_mean`` and
    ``<variant>_acc_std`` over all (sign draw, mask sample) pairs, and ``<variant>_acc_std_draws``, the std of the
    per-draw means (``draws`` sign draws for random_signs; the other variants are deterministic: one draw).
    Masks and signs come from ``generator``."""
    out = {}
    for variant in SIGN_VARIANTS:
        accs, means = [], []
        for _ in range(draws if variant == "random_signs" else 1):
            with signs_changed(model, variant, generator):
                drawn = [evaluate(model, x, y, samples=1, generator=generator)[0] for _ in range(samples)]
            accs += drawn
            means.append(statistics.fmean(drawn))
        out[f"{variant}_acc_mean"] = statistics.fmean(accs)
        out[f"{variant}_acc_std"] = statistics.stdev(accs) if len(accs) > 1 else 0.0
        out[f"{variant}_acc_std_draws"] = statistics.stdev(means) if len(means) > 1 else 0.0
    return out
