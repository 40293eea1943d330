"""Mask criteria: which weights a pruning round keeps.

A criterion is a score function ``score(w_init, w_final, alive) -> scores`` over one weight tensor. ``next_mask``
keeps the highest-scoring ``alive`` weights and prunes ``prune_fraction`` of them. Two rules make every criterion
exact and reproducible:

* ties are broken at random: the alive weights are put in a random order drawn from ``generator`` before a stable
  sort by score, so equal scores are kept in that random order;
* a score of ``-inf`` marks a weight the criterion does not want at all (the sign criteria's "other sign" weights).
  They sort below every finite score and tie with each other, so when too few weights are wanted the shortfall is
  filled uniformly at random, as docs/protocol.md says.

``select`` also counts how many kept weights the random order chose (``tie_broken``): the kept weights at the
lowest kept score when that score is shared with pruned weights (the shortfall of the sign criteria, every kept
weight of ``random``). Counting draws nothing: the masks are those of ``next_mask``.

``random`` is therefore a constant score: every subset of the right size is equally likely.
"""

from __future__ import annotations

from typing import Callable

import torch

from masking.rng import randperm
from ticketlab.registry import Registry

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SCORES: Registry[ScoreFn] = Registry("mask criterion")
register = SCORES.register
names = SCORES.names  # all criteria, in registration order
get = SCORES.get  # the score function of a name; a ValueError naming the valid choices otherwise


def _percentile_rank(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Rank of each alive value among the alive values, scaled to [0, 1] (0 = smallest); 0 where not alive."""
    rank = torch.zeros_like(values)
    alive_values = values[alive]
    n = alive_values.numel()
    if n > 1:
        order = torch.argsort(alive_values, stable=True)
        ranks = torch.empty_like(alive_values)
        ranks[order] = torch.arange(n, dtype=values.dtype, device=values.device) / (n - 1)
        rank[alive] = ranks
    return rank


@register("large_final")
def large_final(w_init, w_final, alive):
    return w_final.abs()


@register("small_final")
def small_final(w_init, w_final, alive):
    return -w_final.abs()


@register("large_init")
def large_init(w_init, w_final, alive):
    return w_init.abs()


@register("small_init")
def small_init(w_init, w_final, alive):
    return -w_init.abs()


@register("large_init_large_final")
def large_init_large_final(w_init, w_final, alive):
    return torch.minimum(_percentile_rank(w_init.abs(), alive), _percentile_rank(w_final.abs(), alive))


@register("small_init_small_final")
def small_init_small_final(w_init, w_final, alive):
    return torch.minimum(1 - _percentile_rank(w_init.abs(), alive), 1 - _percentile_rank(w_final.abs(), alive))


@register("magnitude_increase")
def magnitude_increase(w_init, w_final, alive):
    return w_final.abs() - w_init.abs()


@register("movement")
def movement(w_init, w_final, alive):
    return (w_final - w_init).abs()


@register("random")
def random(w_init, w_final, alive):
    return torch.zeros_like(w_final)


@register("large_final_same_sign")
def large_final_same_sign(w_init, w_final, alive):
    same = torch.sign(w_init) == torch.sign(w_final)
    return torch.where(same, w_final.abs(), torch.full_like(w_final, float("-inf")))


@register("large_final_diff_sign")
def large_final_diff_sign(w_init, w_final, alive):
    differ = torch.sign(w_init) != torch.sign(w_final)
    return torch.where(differ, w_final.abs(), torch.full_like(w_final, float("-inf")))


def num_to_prune(num_alive: int, prune_fraction: float) -> int:
    """How many of ``num_alive`` weights a round removes: ``prune_fraction * num_alive`` rounded half up."""
    return int(prune_fraction * num_alive + 0.5)


def check_fraction(prune_fraction: float) -> float:
    """``prune_fraction`` as a float in [0, 1); a ValueError naming the value otherwise."""
    if isinstance(prune_fraction, bool) or not isinstance(prune_fraction, (int, float)):
        raise ValueError(f"prune fraction must be a number in [0, 1), got {prune_fraction!r}")
    if not 0.0 <= prune_fraction < 1.0:
        raise ValueError(f"prune fraction must be in [0, 1), got {prune_fraction!r}")
    return float(prune_fraction)


def top_alive(
    scores: torch.Tensor, alive: torch.Tensor, num_keep: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Boolean mask of the ``num_keep`` alive positions with the highest scores, ties in random order."""
    alive_idx = alive.flatten().nonzero().squeeze(1)
    perm = randperm(alive_idx.numel(), generator, alive_idx.device)
    shuffled = alive_idx[perm]
    order = torch.sort(scores.flatten()[shuffled], descending=True, stable=True).indices
    keep = torch.zeros(alive.numel(), dtype=torch.bool, device=alive.device)
    keep[shuffled[order[:num_keep]]] = True
    return keep.view_as(alive)


def tie_broken(scores: torch.Tensor, alive: torch.Tensor, keep: torch.Tensor) -> int:
    """How many weights of ``keep`` (a subset of ``alive``) the random order chose: those at the lowest kept score
    when alive weights left out share that score; 0 when the scores alone decide (or all or none are kept)."""
    kept = scores[keep]
    if kept.numel() == 0:
        return 0
    threshold = kept.min()
    alive_scores = scores[alive]
    at_threshold = int((alive_scores == threshold).sum())
    kept_at_threshold = kept.numel() - int((alive_scores > threshold).sum())
    return kept_at_threshold if at_threshold > kept_at_threshold else 0


def select(
    name: str,
    w_init: torch.Tensor,
    w_final: torch.Tensor,
    mask: torch.Tensor,
    prune_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, int]:
    """``(next_mask(...), tie_broken(...))``: the next round's mask and how many of its weights tie-breaking chose."""
    score_fn = get(name)
    prune_fraction = check_fraction(prune_fraction)
    if w_init.shape != w_final.shape or w_init.shape != mask.shape:
        raise ValueError(
            f"w_init {tuple(w_init.shape)}, w_final {tuple(w_final.shape)} and mask {tuple(mask.shape)} "
            "must have the same shape"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a torch.bool tensor, got {mask.dtype}")
    with torch.no_grad():
        w_init, w_final = w_init.detach().float(), w_final.detach().float()
        scores = score_fn(w_init, w_final, mask)
        if torch.isnan(scores[mask]).any():
            raise ValueError(f"criterion {name!r} produced NaN scores (are the weights finite?)")
        num_alive = int(mask.sum())
        keep = top_alive(scores, mask, num_alive - num_to_prune(num_alive, prune_fraction), generator)
        return keep, tie_broken(scores, mask, keep)


def next_mask(name: str, w_init: torch.Tensor, w_final: torch.Tensor, mask: torch.Tensor, prune_fraction: float,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """The mask of the next pruning round of one weight tensor.

    Prunes ``num_to_prune(mask.sum(), prune_fraction)`` of the weights alive in ``mask``, keeping those with the
    highest score under criterion ``name``; the result is a boolean tensor of the same shape and a subset of
    ``mask``. Ties and shortfalls are settled at random from ``generator`` (``select`` also counts them).
    """
    return select(name, w_init, w_final, mask, prune_fraction, generator)[0]
