"""Per-layer iterative pruning of a whole network: the Mask, the schedule, and a ticket's start state.

* ``Mask``: boolean tensors by weight name, with the invariants a pruning run relies on (bool, nested rounds).
* ``layer_rates``: each prunable weight's per-round prune fraction from its role (fc 20%, output 10%, conv 10%,
  conv6 15%); biases are never pruned.
* ``percent_remaining``: percent of prunable weights left after k rounds, computed from shapes without training,
  with exactly the rounding ``criteria.next_mask`` uses.
* ``prune``: one round over every layer; ``apply_ticket``: load a masked net with its mask-1 start values and
  mask-0 frozen values.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from masking import criteria, treatments
from masking.layers import MaskedMixin


class Mask(dict):
    """``{weight name: torch.bool tensor}`` for the prunable weights of one network.

    ``tie_breaks``: {weight name: how many of its kept weights the pruning round's random tie-breaking chose}
    (``criteria.tie_broken``) for a mask ``prune`` made; None for a mask from elsewhere (all ones, loaded)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor] = (), tie_breaks: Mapping[str, int] | None = None):
        super().__init__()
        for name, tensor in dict(tensors).items():
            if tensor.dtype != torch.bool:
                raise ValueError(f"mask {name!r} must be torch.bool, got {tensor.dtype}")
            self[name] = tensor
        self.tie_breaks = None if tie_breaks is None else dict(tie_breaks)

    @classmethod
    def ones(cls, shapes: Mapping[str, torch.Size | torch.Tensor]) -> "Mask":
        """All-kept mask for weights of these shapes (tensors are taken for their shape)."""
        return cls({n: torch.ones(s.shape if isinstance(s, torch.Tensor) else s, dtype=torch.bool)
                    for n, s in shapes.items()})

    @property
    def num_kept(self) -> int:
        return sum(int(m.sum()) for m in self.values())

    @property
    def num_weights(self) -> int:
        return sum(m.numel() for m in self.values())

    @property
    def percent_remaining(self) -> float:
        return 100.0 * self.num_kept / self.num_weights

    def is_subset_of(self, other: "Mask") -> bool:
        """True when every weight kept here is kept in ``other`` (masks of later rounds nest in earlier ones)."""
        return self.keys() == other.keys() and all(bool((self[n] & ~other[n]).sum() == 0) for n in self)


def layer_rates(roles: Mapping[str, str], role_rates: Mapping[str, float]) -> dict[str, float]:
    """Per-weight prune fraction from each weight's role (``conv``, ``fc``, ``output``) and the rate per role."""
    missing = sorted({r for r in roles.values()} - set(role_rates))
    if missing:
        raise ValueError(f"no prune rate given for layer role(s) {missing}; rates given: {dict(role_rates)}")
    return {name: criteria.check_fraction(role_rates[role]) for name, role in roles.items()}


def kept_after(num_weights: int, rate: float, rounds: int) -> int:
    """Weights of one layer left after ``rounds`` rounds at ``rate``, rounding as ``next_mask`` does."""
    kept = num_weights
    for _ in range(rounds):
        kept -= criteria.num_to_prune(kept, rate)
    return kept


def percent_remaining(sizes: Mapping[str, int], rates: Mapping[str, float], rounds: int) -> float:
    """Percent of all prunable weights left after ``rounds`` rounds; ``sizes`` maps weight name to numel."""
    total = sum(sizes.values())
    return 100.0 * sum(kept_after(sizes[n], rates[n], rounds) for n in sizes) / total


def schedule(sizes: Mapping[str, int], rates: Mapping[str, float], rounds: int) -> list[float]:
    """``percent_remaining`` for rounds 0..rounds (100.0 first)."""
    return [percent_remaining(sizes, rates, k) for k in range(rounds + 1)]


def prune(
    criterion: str,
    w_init: Mapping[str, torch.Tensor],
    w_final: Mapping[str, torch.Tensor],
    mask: Mask,
    rates: Mapping[str, float],
    generator: torch.Generator | None = None,
) -> Mask:
    """One pruning round over every layer, layers in sorted name order (a fixed draw order for the generator); the
    result's ``tie_breaks`` counts, per layer, the kept weights tie-breaking chose."""
    criteria.get(criterion)
    chosen = {name: criteria.select(criterion, w_init[name], w_final[name], mask[name], rates[name], generator)
              for name in sorted(mask)}
    return Mask({name: keep for name, (keep, _) in chosen.items()},
                tie_breaks={name: ties for name, (_, ties) in chosen.items()})


def apply_ticket(
    model: nn.Module,
    init_state: Mapping[str, torch.Tensor],
    final_state: Mapping[str, torch.Tensor],
    mask: Mask,
    mask1: str = "original",
    mask0: str = "zero",
    generator: torch.Generator | None = None,
    init_fn=None,
) -> None:
    """Make ``model`` (built with masked layers) the ticket to retrain.

    Every tensor is rewound to ``init_state`` (biases included); each masked weight then starts from the mask-1
    action's values where kept and holds the mask-0 action's values where pruned. Layers in sorted name order.
    """
    treatments.validate(mask1=mask1, mask0=mask0)
    model.load_state_dict(init_state, strict=False)
    modules = dict(model.named_modules())
    for name in sorted(mask):
        layer = modules[name.rsplit(".", 1)[0]]
        if not isinstance(layer, MaskedMixin):
            raise TypeError(f"{name} belongs to a {type(layer).__name__}, not a masked layer: build kind='masked'")
        start = treatments.mask1(mask1, init_state[name], mask[name], generator, init_fn)
        frozen = treatments.mask0(mask0, init_state[name], final_state[name], mask[name], generator)
        layer.set_mask(mask[name], frozen=frozen, start=start)


def weights(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """Detached copies of the named weights of ``model``."""
    state = model.state_dict()
    return {n: state[n].detach().clone() for n in names}
