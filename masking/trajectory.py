"""Which two weight states a mask criterion scores (the rebuttal's question 9): the mask source.

A criterion scores a pair ``(w_a, w_b)`` in the roles of (initial, final) weights. The paper always uses
(w_init, w_final of the previous round). A source picks another pair from the previous round's trajectory:

* ``init_final``: (w_init, w_final), the paper's;
* ``init_best``: (w_init, w_best), w_best = the weights at the minimum validation loss (early stopping point);
* ``iter_final``: (w_t, w_final), w_t = the weights after ``t`` training steps of the previous round;
* ``init_iter``: (w_init, w_t).

Only the criterion sees the pair: the rewind and the mask-0 actions still use the true w_init and w_final.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch

SOURCES = ("init_final", "init_best", "iter_final", "init_iter")
State = Mapping[str, torch.Tensor]


def needs_iteration(source: str) -> bool:
    """Whether ``source`` scores the weights at a chosen training step ``t``."""
    return source in ("iter_final", "init_iter")


def check(source: str, iteration: int | None, iterations: int) -> None:
    """A ValueError naming the bad value and the valid choices unless ``source`` (and ``iteration``, the step
    t where the source needs one, in 1..iterations-1) are valid."""
    if source not in SOURCES:
        raise ValueError(f"unknown mask source {source!r}; valid choices: {', '.join(SOURCES)}")
    if needs_iteration(source):
        if isinstance(iteration, bool) or not isinstance(iteration, int) or not 0 < iteration < iterations:
            raise ValueError(f"mask source {source} needs an iteration t with 0 < t < {iterations} (the steps "
                             f"per round), got {iteration!r}")


@dataclasses.dataclass
class Trajectory:
    """The states of one round's training a source may pick from (each with the step it was taken at)."""

    init: State
    final: State
    final_iteration: int
    best: State | None = None
    best_iteration: int | None = None
    at: State | None = None  # the weights after ``at_iteration`` steps, kept when the source needs them
    at_iteration: int | None = None


def pair(source: str, trajectory: Trajectory) -> tuple[State, State, list[int]]:
    """The (w_a, w_b) a criterion scores under ``source``, and the training steps of the previous round they
    were taken at (0: the initialization)."""
    t = trajectory
    states = {"init": (t.init, 0), "final": (t.final, t.final_iteration), "best": (t.best, t.best_iteration),
              "iter": (t.at, t.at_iteration)}
    if source not in SOURCES:
        raise ValueError(f"unknown mask source {source!r}; valid choices: {', '.join(SOURCES)}")
    (a, ia), (b, ib) = (states[part] for part in source.split("_"))
    if a is None or b is None:
        raise ValueError(f"mask source {source} needs states the trajectory did not keep")
    return a, b, [ia, ib]
