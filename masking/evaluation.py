"""Loss and accuracy of a classifier on data held in memory."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> tuple[float, float]:
    """(mean cross-entropy loss, top-1 accuracy) of ``model`` on ``(x, y)``, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return loss_sum / len(x), correct / len(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``."""
    return evaluate(model, x, y, batch_size)[1]
