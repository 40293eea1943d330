"""Populations: K masked nets of one architecture trained in lockstep as one batched computation.

A LeNet-300-100 step at batch 60 is far too small to keep a core busy; K nets side by side are not. ``Stack`` holds
the weights of K masked nets (``models.build(kind="masked")``) stacked per layer, ``[K, ...]``, and runs them in one
batched forward/backward:

* fully connected layers: ``torch.baddbmm`` over ``[K, B, in] x [K, in, out]``;
* convolutions: one grouped ``conv2d`` with ``groups=K`` on ``[B, K * C, H, W]`` (member k's channels are group k).

Every member keeps what makes it its own run: its initial weights, mask and frozen values (pruned weights get a zero
gradient and keep their values bit for bit, as in ``masking.layers``), its data order (its own generator through
``training.batch_indices``), its validation curve, early-stopping point and best state. Members never mix: the
loss is the sum of the members' mean losses, so each member's gradient is its own, and Adam (elementwise, one step
count for all) over the stacked parameters is K Adams. In float64 a member equals its single run (``training.fit``
on the same net and generator) to rounding (1e-14 in practice); in float32 batched products round differently and
Adam amplifies that, so members drift from single runs as seeds do (bench and docs state how far).

The hand-written batched layers beat ``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``) on the
CPU: ``bench/population.py`` measures both.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from masking.layers import MaskedMixin
from masking.models import Net
from masking.training import OPTIMIZERS, FitResult, batch_indices

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a ``training.dtype`` value; a ValueError naming the valid choices otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid choices: {', '.join(DTYPES)}")
    return DTYPES[name]


class MemberFailed(FloatingPointError):
    """A member's numbers went bad (a non-finite loss); the other members go on."""


class Stack(nn.Module):
    """The weights of K masked nets of one architecture, stacked per layer, and their batched forward pass.

    Parameters are named as in a ``Net`` (``fcs.0.weight`` becomes ``fcs_0_weight``, stacked as ``[K, in, out]``);
    ``member_state(k)`` gives member k's state dict, loadable into its ``Net``.
    """

    def __init__(self, nets: Sequence[Net], dtype: str | torch.dtype | None = None):
        super().__init__()
        if not nets:
            raise ValueError("a population needs at least one member")
        first = nets[0]
        for net in nets:
            if net.arch != first.arch or net.input_shape != first.input_shape:
                raise ValueError("population members must share the architecture and input shape: "
                                 f"{net.arch.name} {net.input_shape} vs {first.arch.name} {first.input_shape}")
        dtype = dtype_of(dtype) if dtype is not None else first.fcs[0].weight.dtype
        self.size = len(nets)
        self.arch, self.input_shape = first.arch, first.input_shape
        self.pool_after = list(first.pool_after)
        self.num_convs, self.num_fcs = len(first.convs), len(first.fcs)
        self.names = [name for name, _ in first.named_parameters()]  # convs.i.weight/bias, fcs.j.weight/bias
        states = [net.state_dict() for net in nets]
        for name in self.names:
            stacked = self._stacked(name, [s[name].detach() for s in states]).to(dtype).clone()
            self.register_parameter(name.replace(".", "_"), nn.Parameter(stacked))
        self.masked = [name for name, m in first.named_modules() if isinstance(m, MaskedMixin)]
        for layer in self.masked:
            mask = self._stacked(f"{layer}.weight", [s[f"{layer}.mask"] for s in states]).clone()
            frozen = self._stacked(f"{layer}.weight", [s[f"{layer}.frozen"] for s in states]).to(dtype).clone()
            self.register_buffer(f"{layer.replace('.', '_')}_mask", mask)
            self.register_buffer(f"{layer.replace('.', '_')}_frozen", frozen)
        self._refresh()

    @staticmethod
    def _stacked(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        """``[K, ...]``; fc weights as ``[K, in, out]`` (the layout whose batched products need no copies)."""
        stacked = torch.stack(tensors)
        return stacked.transpose(1, 2).contiguous() if name.startswith("fcs.") and name.endswith(".weight") else stacked

    @staticmethod
    def _member(name: str, stacked: torch.Tensor, k: int) -> torch.Tensor:
        """Member ``k``'s tensor, in its ``Net``'s layout (a contiguous copy)."""
        tensor = stacked[k].detach()
        return (tensor.t() if name.startswith("fcs.") and name.endswith(".weight") else tensor).contiguous().clone()

    def param(self, name: str) -> nn.Parameter:
        return getattr(self, name.replace(".", "_"))

    def _refresh(self) -> None:
        """Float keep-masks ([K, ...], 1 kept) of the layers where some member prunes; pruned values restored."""
        self._keep = {}
        for layer in self.masked:
            mask = getattr(self, f"{layer.replace('.', '_')}_mask")
            if not bool(mask.all()):
                self._keep[layer] = mask.to(self.param(f"{layer}.weight").dtype)
        self.restore_frozen()

    def restore_frozen(self) -> None:
        """Write each member's frozen values back into its pruned positions (exact: ``w * keep + frozen``)."""
        with torch.no_grad():
            for layer, keep in self._keep.items():
                weight = self.param(f"{layer}.weight")
                frozen = getattr(self, f"{layer.replace('.', '_')}_frozen")
                torch.addcmul(frozen, weight, keep, out=weight.data)

    def mask_grads(self) -> None:
        """Zero the gradient of every pruned weight (so Adam's moments stay 0 there and the weight never moves)."""
        for layer, keep in self._keep.items():
            grad = self.param(f"{layer}.weight").grad
            if grad is not None:
                grad.mul_(keep)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s state dict (weights, biases, masks, frozen values), copies, in the stack's dtype."""
        state = {name: self._member(name, self.param(name), k) for name in self.names}
        for layer in self.masked:
            for buffer in ("mask", "frozen"):
                stacked = getattr(self, f"{layer.replace('.', '_')}_{buffer}")
                state[f"{layer}.{buffer}"] = self._member(f"{layer}.weight", stacked, k)
        return state

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits ``[K, B, classes]``: member k's net on ``x[k]`` (``x`` is ``[K, B, C, H, W]``), or every member
        on the same ``x`` (``[B, C, H, W]``) when ``shared``."""
        K = self.size
        if self.num_convs:
            if shared:
                B = x.shape[0]
                h = x.repeat(1, K, 1, 1)  # [B, K*C, H, W]
            else:
                B = x.shape[1]
                h = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
            for i, pool in enumerate(self.pool_after):
                w, b = self.param(f"convs.{i}.weight"), self.param(f"convs.{i}.bias")
                h = F.relu(F.conv2d(h, w.flatten(0, 1), b.flatten(), padding=1, groups=K))
                if pool:
                    h = F.max_pool2d(h, 2)
            h = h.view(B, K, -1).transpose(0, 1)  # [K, B, features], each member's flatten(1) order
        else:
            h = x.flatten(1) if shared else x.flatten(2)
        last = self.num_fcs - 1
        for j in range(self.num_fcs):
            w, b = self.param(f"fcs.{j}.weight"), self.param(f"fcs.{j}.bias")
            if h.dim() == 2:  # the shared input of the first layer: [B, in] @ [K, in, out]
                h = torch.matmul(h, w) + b.unsqueeze(1)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if j < last:
                h = F.relu(h)
        return h


def make_optimizer(stack: Stack, name: str = "adam", lr: float = 1e-3, **kwargs) -> torch.optim.Optimizer:
    """One optimizer over the stacked parameters (the registry's, e.g. fused Adam): elementwise optimizers over a
    stack equal one per member. With weight decay, pruned weights are restored after every step."""
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")
    optimizer = OPTIMIZERS.get(name)(list(stack.parameters()), lr, **kwargs)
    if stack._keep and any(group.get("weight_decay", 0) for group in optimizer.param_groups):
        optimizer.register_step_post_hook(lambda opt, args, kw: stack.restore_frozen())
    return optimizer


def train_step(stack: Stack, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One lockstep optimizer step: member k on its batch ``(x[k], y[k])``; returns the K (detached) losses."""
    optimizer.zero_grad(set_to_none=True)
    logits = stack(x)
    K, B = y.shape
    losses = F.cross_entropy(logits.reshape(K * B, -1), y.reshape(-1), reduction="none").view(K, B).mean(1)
    losses.sum().backward()
    stack.mask_grads()
    optimizer.step()
    return losses.detach()


@torch.no_grad()
def evaluate(stack: Stack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> list[tuple[float, float]]:
    """Every member's (mean cross-entropy loss, top-1 accuracy) on the same ``(x, y)``; ``batch_size`` is per
    member, so memory stays that of one net's ``masking.evaluation.evaluate``."""
    chunk = max(1, batch_size // stack.size)
    loss_sum = torch.zeros(stack.size, dtype=torch.float64)
    correct = torch.zeros(stack.size, dtype=torch.int64)
    for start in range(0, len(x), chunk):
        logits = stack(x[start:start + chunk], shared=True)  # [K, b, classes]
        target = y[start:start + chunk]
        K, b, C = logits.shape
        losses = F.cross_entropy(logits.reshape(K * b, C), target.repeat(K), reduction="none").view(K, b)
        loss_sum += losses.sum(1).double()
        correct += (logits.argmax(2) == target).sum(1)
    return [(float(loss_sum[k]) / len(x), int(correct[k]) / len(x)) for k in range(stack.size)]


@dataclasses.dataclass
class _Best:
    val_loss: float
    val_acc: float
    iteration: int
    state: dict


Split = tuple[torch.Tensor, torch.Tensor]


def fit(stack: Stack, optimizer: torch.optim.Optimizer, train: Split, val: Split, iterations: int, batch_size: int,
        eval_every: int, generators: Sequence[torch.Generator | None],
        on_eval: Callable[[int, dict[str, float]], None] | None = None) -> list[FitResult | MemberFailed]:
    """``training.fit`` for every member at once: member k draws its batches from ``generators[k]``, is evaluated
    every ``eval_every`` steps (and after the last) and keeps its own best state (``member_state``).

    Returns one ``FitResult`` per member (``seconds`` is the population's wall time), or a ``MemberFailed`` for a
    member whose training or validation loss became non-finite; ``on_eval(k, point)`` is called for live members.
    """
    if len(generators) != stack.size:
        raise ValueError(f"{stack.size} members need {stack.size} generators, got {len(generators)}")
    if iterations < 1 or eval_every < 1:
        raise ValueError(f"iterations and eval_every must be positive, got {iterations} and {eval_every}")
    start = time.perf_counter()
    x, y = train
    orders = [batch_indices(len(x), batch_size, g) for g in generators]
    best: list[_Best | None] = [None] * stack.size
    failed: dict[int, MemberFailed] = {}
    curves: list[list[dict]] = [[] for _ in range(stack.size)]
    loss_sum, loss_count = torch.zeros(stack.size, dtype=x.dtype), 0
    for it in range(1, iterations + 1):
        idx = torch.stack([next(order) for order in orders])  # [K, B]
        loss_sum += train_step(stack, optimizer, x[idx], y[idx])
        loss_count += 1
        if it % eval_every == 0 or it == iterations:
            scores = evaluate(stack, *val)
            for k, (val_loss, val_acc) in enumerate(scores):
                if k in failed:
                    continue
                point = {"iteration": it, "train_loss": float(loss_sum[k]) / loss_count, "val_loss": val_loss,
                         "val_acc": val_acc}
                if not (math.isfinite(point["train_loss"]) and math.isfinite(val_loss)):
                    failed[k] = MemberFailed(f"member {k}: non-finite loss at iteration {it} "
                                             f"(train {point['train_loss']}, validation {val_loss})")
                    continue
                curves[k].append(point)
                if best[k] is None or val_loss < best[k].val_loss:
                    best[k] = _Best(val_loss, val_acc, it, stack.member_state(k))
                if on_eval is not None:
                    on_eval(k, point)
            loss_sum, loss_count = torch.zeros_like(loss_sum), 0
    seconds = time.perf_counter() - start
    return [failed[k] if k in failed else
            FitResult(best[k].iteration, best[k].val_loss, best[k].val_acc, best[k].state, curves[k], seconds)
            for k in range(stack.size)]
