"""Loss and accuracy of a classifier on data held in memory."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


@torch.no_grad()
def scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
    """``tensor([mean cross-entropy loss, top-1 accuracy])`` of ``model`` on ``(x, y)`` in eval mode, float64 on
    ``x``'s device, with no host sync (``evaluate`` reads it: one sync)."""
    was_training = model.training
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=x.device)  # loss sum, correct count
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        totals[0] += F.cross_entropy(logits, target, reduction="sum").double()
        totals[1] += (logits.argmax(1) == target).sum()
    model.train(was_training)
    return totals / len(x)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean cross-entropy loss, top-1 accuracy) of ``model`` on ``(x, y)``, in eval mode."""
    loss, acc = scores(model, x, y, batch_size).tolist()
    return loss, acc


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    return evaluate(model, x, y, batch_size)[1]
