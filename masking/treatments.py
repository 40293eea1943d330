"""Mask-1 and mask-0 actions: what kept weights start from, and what pruned weights hold while training.

``mask1(name, w_init, mask, generator)`` returns the start values of the kept weights (0 where pruned);
``mask0(name, w_init, w_final, mask, generator)`` returns the frozen values of the pruned weights (0 where kept).
A layer's weight before retraining is ``mask1(...) + mask0(...)``. All randomness comes from ``generator``.
"""

from __future__ import annotations

from typing import Callable

import torch

from masking.initializers import glorot_normal_
from masking.rng import generator_device, randperm, random_signs
from ticketlab.registry import Registry

InitFn = Callable[..., torch.Tensor]
Mask1Fn = Callable[[torch.Tensor, torch.Tensor, torch.Generator | None, InitFn], torch.Tensor]
Mask0Fn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator | None], torch.Tensor]

MASK1: Registry[Mask1Fn] = Registry("mask-1 action")
MASK0: Registry[Mask0Fn] = Registry("mask-0 action")
mask1_names = MASK1.names
mask0_names = MASK0.names


def validate(mask1: str | None = None, mask0: str | None = None) -> None:
    """Raise a ValueError naming the valid choices unless the given action names are known."""
    if mask1 is not None:
        MASK1.get(mask1)
    if mask0 is not None:
        MASK0.get(mask0)


# ---------------------------------------------------------------- helpers shared by the actions


def _fresh(w_init: torch.Tensor, generator, init_fn: InitFn) -> torch.Tensor:
    """A fresh draw shaped like ``w_init``; ``init_fn(tensor, generator=...)`` fills it, torch.nn.init style."""
    empty = torch.empty(w_init.shape, dtype=w_init.dtype, device=generator_device(generator))
    out = init_fn(empty, generator=generator)
    return (empty if out is None else out).to(w_init.device)  # drawn where the generator lives (CPU streams)


def _permuted_kept(values: torch.Tensor, mask: torch.Tensor, generator) -> torch.Tensor:
    """``values`` at kept positions permuted uniformly among the kept positions; 0 where pruned."""
    idx = mask.flatten().nonzero().squeeze(1)
    perm = randperm(idx.numel(), generator, idx.device)
    out = torch.zeros_like(values).flatten()
    out[idx] = values.flatten()[idx[perm]]
    return out.view_as(values)


def layer_alpha(w_init: torch.Tensor) -> float:
    """The constant of the constant actions: std of the layer's initial weights (all of them), computed on the CPU
    whatever device holds them (a GPU reduces in another order: its std can differ in the last bit)."""
    return float(w_init.detach().cpu().std())


# ---------------------------------------------------------------- mask-1 actions


@MASK1.register("original")
def _original(w_init, mask, generator, init_fn):
    return w_init


@MASK1.register("reinit")
def _reinit(w_init, mask, generator, init_fn):
    return _fresh(w_init, generator, init_fn)


@MASK1.register("reshuffle")
def _reshuffle(w_init, mask, generator, init_fn):
    return _permuted_kept(w_init, mask, generator)


@MASK1.register("constant")
def _constant(w_init, mask, generator, init_fn):
    return layer_alpha(w_init) * random_signs(w_init, generator)


@MASK1.register("signed_reinit")
def _signed_reinit(w_init, mask, generator, init_fn):
    return _fresh(w_init, generator, init_fn).abs() * torch.sign(w_init)


@MASK1.register("signed_reshuffle")
def _signed_reshuffle(w_init, mask, generator, init_fn):
    return _permuted_kept(w_init.abs(), mask, generator) * torch.sign(w_init)


@MASK1.register("signed_constant")
def _signed_constant(w_init, mask, generator, init_fn):
    return layer_alpha(w_init) * torch.sign(w_init)


@MASK1.register("signed_bimodal")
def _signed_bimodal(w_init, mask, generator, init_fn):
    """The bimodal control of signed_reinit (rebuttal 6): a fresh draw z of the initializer (std s), magnitude
    abs(sqrt(1 - 0.25**2) * s + 0.25 * z), the sign of w_init. Same mean square as signed_reinit (s**2), but the
    magnitudes cluster at 0.97 s with std 0.25 s instead of spreading from 0: hardly any start near zero."""
    z = _fresh(w_init, generator, init_fn)
    spread = 0.25
    return (z.std() * (1 - spread ** 2) ** 0.5 + spread * z).abs() * torch.sign(w_init)


def mask1(
    name: str,
    w_init: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
    init_fn: InitFn | None = None,
) -> torch.Tensor:
    """Start values of the kept weights under mask-1 action ``name``; 0 where ``mask`` is False.

    ``init_fn(tensor, generator=generator)`` fills a tensor in place for reinit/signed_reinit (any
    ``torch.nn.init`` function fits); the default is the layer's Glorot-normal scale.
    """
    fn = MASK1.get(name)
    _check(w_init, mask)
    with torch.no_grad():
        values = fn(w_init.detach(), mask, generator, init_fn or glorot_normal_)
        return torch.where(mask, values, torch.zeros_like(w_init))


# ---------------------------------------------------------------- mask-0 actions


def _toward_zero(w_init, w_final, mask):
    """Pruned weights whose magnitude shrank during training."""
    return ~mask & (w_final.abs() < w_init.abs())


@MASK0.register("zero")
def _zero(w_init, w_final, mask, generator):
    return torch.zeros_like(w_init)


@MASK0.register("init")
def _init(w_init, w_final, mask, generator):
    return w_init


@MASK0.register("zero_if_toward_zero")
def _zero_if_toward_zero(w_init, w_final, mask, generator):
    return torch.where(_toward_zero(w_init, w_final, mask), torch.zeros_like(w_init), w_init)


@MASK0.register("random_zero")
def _random_zero(w_init, w_final, mask, generator):
    num_zero = int(_toward_zero(w_init, w_final, mask).sum())
    pruned_idx = (~mask).flatten().nonzero().squeeze(1)
    perm = randperm(pruned_idx.numel(), generator, pruned_idx.device)
    out = w_init.clone().flatten()
    out[pruned_idx[perm[:num_zero]]] = 0
    return out.view_as(w_init)


def mask0(
    name: str,
    w_init: torch.Tensor,
    w_final: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Values the pruned weights are frozen at under mask-0 action ``name``; 0 where ``mask`` is True."""
    fn = MASK0.get(name)
    _check(w_init, mask, w_final)
    with torch.no_grad():
        values = fn(w_init.detach(), w_final.detach(), mask, generator)
        return torch.where(mask, torch.zeros_like(w_init), values)


def _check(w_init: torch.Tensor, mask: torch.Tensor, w_final: torch.Tensor | None = None) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a torch.bool tensor, got {mask.dtype}")
    shapes = [w_init.shape, mask.shape] + ([w_final.shape] if w_final is not None else [])
    if any(s != w_init.shape for s in shapes):
        raise ValueError(f"weights and mask must have the same shape, got {[tuple(s) for s in shapes]}")
