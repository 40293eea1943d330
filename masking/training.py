"""Training every ticketlab net: optimizer registry, seeded batch order, the step, and ``fit`` with early stopping.

``make_optimizer`` builds the optimizer over the trainable parameters only (a Supermask's scores, a masked net's
weights and biases) with the fastest stock settings (``fused=True`` where torch has it), and guards masked layers
(``layers.guard_optimizer``) so pruned weights stay frozen under any optimizer setting.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from masking.evaluation import evaluate
from masking.layers import guard_optimizer, masked_layers
from masking.registry import Registry

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.add("adam", lambda params, lr, **kw: torch.optim.Adam(params, lr=lr, fused=True, **kw))
OPTIMIZERS.add("sgd", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr, **kw))
optimizer_names = OPTIMIZERS.names


class DataSplits(Protocol):
    """In-memory data a procedure trains on (``experiments.datasets.Splits`` is one): ``(x, y)`` tensor pairs."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def data_shape(data: DataSplits) -> tuple[tuple[int, ...], int]:
    """(input shape (C, H, W), number of classes) of ``data``: what a net built for it needs."""
    num_classes = int(max(int(split[1].max()) for split in (data.train, data.val, data.test))) + 1
    return tuple(data.train[0].shape[1:]), num_classes


@dataclasses.dataclass(frozen=True)
class Placed:
    """``DataSplits`` moved to a device, inputs in a floating dtype (labels stay integer)."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def place(data: DataSplits, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Placed:
    """``data`` on ``device`` with inputs in ``dtype``; tensors already there are used as they are (no copy)."""
    def move(split):
        x, y = split
        return x.to(device=device, dtype=dtype), y.to(device=device)

    return Placed(move(data.train), move(data.val), move(data.test))


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How one round (or one Supermask run) trains: optimizer, learning rate, steps, batch, evaluation cadence."""

    iterations: int
    lr: float
    batch_size: int = 60
    eval_every: int = 100
    optimizer: str = "adam"


def cpu_settings(threads: int | None = None) -> None:
    """Process-wide CPU settings for training: flush denormal floats to zero (Adam's second moments go denormal
    and make a LeNet step 2x slower on x86 otherwise) and, when given, the number of intra-op threads."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(int(threads))


def make_optimizer(model: nn.Module, name: str = "adam", lr: float = 1e-3, **kwargs) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``model``'s trainable parameters; masked layers are guarded."""
    build = OPTIMIZERS.get(name)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")
    optimizer = build([p for p in model.parameters() if p.requires_grad], lr, **kwargs)
    if masked_layers(model) and any(group.get("weight_decay", 0) for group in optimizer.param_groups):
        guard_optimizer(optimizer, model)
    return optimizer


def batch_indices(num_examples: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Endless mini-batches of example indices: a fresh seeded permutation each epoch, the last partial batch
    of an epoch dropped."""
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"batch size must be in [1, {num_examples}], got {batch_size}")
    while True:
        perm = torch.randperm(num_examples, generator=generator)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield perm[start:start + batch_size]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the batch ``(x, y)``; returns the (detached) loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fit_config(model: nn.Module, data: DataSplits, config: TrainingConfig, generator: torch.Generator | None,
               on_eval: Callable[[dict[str, float]], None] | None = None) -> "FitResult":
    """``fit`` with a fresh optimizer per ``config`` on ``data``'s training and validation splits."""
    optimizer = make_optimizer(model, config.optimizer, config.lr)
    return fit(model, optimizer, data.train, data.val, config.iterations, config.batch_size, config.eval_every,
               generator, on_eval)


def eval_points(iterations: int, eval_every: int) -> list[int]:
    """The iterations ``fit`` evaluates at: every ``eval_every`` steps and after the last."""
    return sorted({*range(eval_every, iterations + 1, eval_every), iterations})


@dataclasses.dataclass
class FitResult:
    """What ``fit`` found: the early-stopping point (minimum validation loss) and the learning curve."""

    best_iteration: int  # iteration of minimum validation loss (the early-stopping iteration)
    best_val_loss: float
    best_val_acc: float
    best_state: dict[str, torch.Tensor]  # a copy of the model's state at best_iteration
    curve: list[dict[str, float]]  # one entry per evaluation: iteration, train_loss, val_loss, val_acc
    seconds: float  # wall time of the whole fit, evaluations included


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    iterations: int,
    batch_size: int,
    eval_every: int,
    generator: torch.Generator | None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> FitResult:
    """Train ``iterations`` steps on in-memory data, evaluating validation loss/accuracy every ``eval_every`` steps
    (and after the last); keep a copy of the state with the lowest validation loss.

    Only what early stopping needs is evaluated here: test the returned ``best_state`` (and the final state) once.
    """
    if iterations < 1 or eval_every < 1:
        raise ValueError(f"iterations and eval_every must be positive, got {iterations} and {eval_every}")
    start = time.perf_counter()
    x, y = train
    order = batch_indices(len(x), batch_size, generator)
    best: tuple[float, float, int, dict] | None = None
    curve = []
    loss_sum, loss_count = torch.zeros(()), 0
    points = set(eval_points(iterations, eval_every))
    model.train()
    for it in range(1, iterations + 1):
        idx = next(order)
        loss_sum += train_step(model, optimizer, x[idx], y[idx])
        loss_count += 1
        if it in points:
            val_loss, val_acc = evaluate(model, *val)
            point = {"iteration": it, "train_loss": float(loss_sum) / loss_count, "val_loss": val_loss,
                     "val_acc": val_acc}
            curve.append(point)
            loss_sum, loss_count = torch.zeros(()), 0
            if best is None or val_loss < best[0]:
                best = (val_loss, val_acc, it, {k: v.detach().clone() for k, v in model.state_dict().items()})
            if on_eval is not None:
                on_eval(point)
    assert best is not None
    return FitResult(best[2], best[0], best[1], best[3], curve, time.perf_counter() - start)
