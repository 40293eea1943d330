"""Weight initializers drawn from an explicit ``torch.Generator`` (never the global RNG).

The paper's networks use Glorot-normal weights and zero biases. Glorot normal here is the untruncated normal
``N(0, 2 / (fan_in + fan_out))`` with torch's fan convention (a conv kernel counts its receptive field in both fans),
the same as ``torch.nn.init.xavier_normal_``.
"""

from __future__ import annotations

import math

import torch


def fans(shape: torch.Size | tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape: (out, in) for linear, (out, in, *kernel) for conv."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight of 2 or more dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def glorot_std(shape: torch.Size | tuple[int, ...]) -> float:
    """Standard deviation of Glorot-normal weights of this shape."""
    fan_in, fan_out = fans(shape)
    return math.sqrt(2.0 / (fan_in + fan_out))


def glorot_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` in place with Glorot-normal values; same call shape as ``torch.nn.init`` functions."""
    with torch.no_grad():
        return tensor.normal_(0.0, glorot_std(tensor.shape), generator=generator)
