"""Heuristic masks to start a Supermask from (the rebuttal's question 8), computed on the fly.

``one_shot_mask`` keeps ``percent`` percent of every layer by a mask criterion in one round (no iterations);
``dense_trajectory`` gives the (initial, trained) weights a criterion scores: the dense net of the same seed trained
with the usual training settings. A criterion that ignores the trained weights (``random``, ``large_init``, ...)
still gets them; it is cheap next to the Supermask's own training.
"""

from __future__ import annotations

from typing import Mapping

import torch

from masking import models, pruning, training


def one_shot_mask(criterion: str, w_init: Mapping[str, torch.Tensor], w_final: Mapping[str, torch.Tensor],
                  names: list[str], percent: float, generator: torch.Generator | None = None) -> pruning.Mask:
    """The mask keeping ``percent`` percent of each named weight by ``criterion`` scored on (w_init, w_final)."""
    if not 0 < percent <= 100:
        raise ValueError(f"percent remaining must be in (0, 100], got {percent!r}")
    ones = pruning.Mask.ones({name: w_init[name] for name in names})
    return pruning.prune(criterion, w_init, w_final, ones, {name: 1 - percent / 100 for name in names}, generator)


def dense_trajectory(arch: str, seed: int, data, iterations: int, lr: float, batch_size: int, eval_every: int,
                     generator: torch.Generator | None, optimizer: str = "adam",
                     device: str | torch.device = "cpu") -> tuple[dict, dict, list[str]]:
    """(initial, trained) weights of the dense net ``arch`` from ``seed``, trained ``iterations`` steps on
    ``data`` (a ``Splits``: train, val; the trained weights are the final ones) on ``device`` (the Supermask run's:
    the weights come back there), and its prunable weights' names."""
    net = models.build(arch, seed, "dense", input_shape=data.input_shape, num_classes=data.num_classes).to(device)
    placed = training.place(data, device)
    init = models.weight_state(net)
    training.fit(net, training.make_optimizer(net, optimizer, lr), placed.train, placed.val, iterations, batch_size,
                 eval_every, generator)
    return init, models.weight_state(net), list(net.layer_roles())
