"""Populations: K masked nets of one architecture trained in lockstep as one batched computation.

A LeNet-300-100 step at batch 60 is far too small to keep a core busy; K nets side by side are not. ``Stack`` holds
the weights of K masked nets (``models.build(kind="masked")``) stacked per layer, ``[K, ...]``, and runs them in one
batched forward/backward:

* fully connected layers: ``torch.baddbmm`` over ``[K, B, in] x [K, in, out]``;
* convolutions: one grouped ``conv2d`` with ``groups=K`` on ``[B, K * C, H, W]`` (member k's channels are group k).

Every member keeps what makes it its own run: its initial weights, mask and frozen values (pruned weights get a zero
gradient and keep their values bit for bit, as in ``masking.layers``), its data order (its own generator, drawn as
``training.batch_indices`` draws it: ``training.BatchOrder``), its validation curve, early-stopping point and best
state. Members never mix: the loss is the sum of the members' mean losses, so each member's gradient is its own,
and Adam (elementwise, one step count for all) over the stacked parameters is K Adams. In float64 a member equals
its single run (``training.fit`` on the same net and generator) to rounding (1e-14 in practice); in float32
batched products round differently and Adam amplifies that, so members drift from single runs as seeds do (bench
and docs state how far).

The hand-written batched layers beat ``torch.func`` (``stack_module_state`` + ``functional_call`` + ``vmap``) on the
CPU: ``bench/population.py`` measures both.

On a GPU a step needs no host sync (``training.make_trainee``; a CUDA graph with ``training.graphs=auto``): the
one-hot gradient of ``fc_gradients`` is a comparison against the classes (``scatter_add_`` under deterministic
algorithms sorts and copies to the host), dynamic weight rescaling reads per-member flags made on the device once,
and a Supermask population draws the training-time noise of all its members and layers in one call from one
generator on the device (``Stack.noise``, seeded from the members' own: a GPU member then samples other masks than
its single GPU run, from the same law; on the CPU each member draws from its own generator as its single run
does). Evaluation (``scores``) runs all members on large chunks of examples on a GPU and is read once.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from masking import rng, training
from masking.layers import MaskedMixin
from masking.models import Net
from masking.rng import generator_device
from masking.supermask import SupermaskMixin
from masking.training import Diverged, FitResult, Trainee

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def dtype_of(name: str | torch.dtype) -> torch.dtype:
    """The torch dtype of a ``training.dtype`` value; a ValueError naming the valid choices otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; valid choices: {', '.join(DTYPES)}")
    return DTYPES[name]


class _StraightThrough(torch.autograd.Function):
    """``uniform < probs`` as a float mask whose gradient passes straight through to ``probs``
    (``masking.supermask.sample_mask`` with the uniforms drawn beforehand)."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        return (uniform < probs).to(probs.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class MemberFailed(Diverged):
    """A member whose loss went non-finite (``training.Diverged``, named for the member): it fails alone."""


class Stack(nn.Module):
    """The state of K nets of one architecture (masked or Supermask), stacked per tensor, and their batched forward.

    Tensors are named as in a ``Net`` (``fcs.0.weight`` becomes ``fcs_0_weight``; fc matrices are stacked as
    ``[K, in, out]``, the layout whose batched products need no copies); the trainable ones (a masked net's weights
    and biases, a Supermask's scores) are parameters. ``member_state(k)`` is member k's state dict, loadable into
    its ``Net``. Supermask layers sample each member's mask from that member's own generator (the one its net's
    layers hold), in the order its single run draws them.
    """

    def __init__(self, nets: Sequence[Net], dtype: str | torch.dtype | None = None):
        super().__init__()
        if not nets:
            raise ValueError("a population needs at least one member")
        first = nets[0]
        for net in nets:
            if net.arch != first.arch or net.input_shape != first.input_shape or \
                    [type(m) for m in net.modules()] != [type(m) for m in first.modules()]:
                raise ValueError("population members must share the architecture, kind and input shape: "
                                 f"{net.arch.name} {net.input_shape} vs {first.arch.name} {first.input_shape}")
        dtype = dtype_of(dtype) if dtype is not None else first.fcs[0].weight.dtype
        self.size = len(nets)
        self.arch, self.input_shape = first.arch, first.input_shape
        self.pool_after = list(first.pool_after)
        self.num_convs, self.num_fcs = len(first.convs), len(first.fcs)
        trainable = {name for name, p in first.named_parameters() if p.requires_grad}
        states = [net.state_dict() for net in nets]
        self.names = list(states[0])
        for name in self.names:
            stacked = self._stacked(name, [s[name].detach() for s in states])
            stacked = stacked.clone() if stacked.dtype == torch.bool else stacked.to(dtype).clone()
            if name in trainable:
                self.register_parameter(self._attr(name), nn.Parameter(stacked))
            else:
                self.register_buffer(self._attr(name), stacked)
        modules = dict(first.named_modules())
        self.masked = [name for name, m in modules.items() if isinstance(m, MaskedMixin)]
        device = self.tensor(self.names[0]).device
        # per Supermask layer: which members rescale their weights dynamically (a [K] bool tensor on the device,
        # made once) and whether any does
        self.supermask = {name: torch.tensor([dict(net.named_modules())[name].rescale for net in nets], device=device)
                          for name, m in modules.items() if isinstance(m, SupermaskMixin)}
        self._rescales = {name: any(dict(net.named_modules())[name].rescale for net in nets)
                          for name in self.supermask}
        self.generators = [next((m.generator for m in net.modules() if isinstance(m, SupermaskMixin)), None)
                           for net in nets]
        # the population's own noise generator on a device (members' generators there): one draw per step for all
        self.noise: torch.Generator | None = None
        if self.supermask and all(g is not None and g.device.type != "cpu" for g in self.generators):
            seeds = [g.initial_seed() for g in self.generators]
            self.noise = rng.seeded(rng.derive(seeds[0], "population noise", *seeds[1:]), self.generators[0].device)
        self.widest = self._widest()
        self.kept: dict[str, torch.Tensor] | None = None  # the members' early-stopping states (``keep``)
        self._fixed: dict[str, torch.Tensor] | None = None
        self._refresh()

    def _widest(self) -> int:
        """The most values one member computes per example at one layer (the input, a conv's output, an fc's)."""
        channels, height, width = self.input_shape
        widths = [channels * height * width]
        for i, pool in enumerate(self.pool_after):
            widths.append(self.tensor(f"convs.{i}.weight").shape[1] * height * width)
            if pool:
                height, width = height // 2, width // 2
        return max(widths + [self.tensor(f"fcs.{j}.bias").shape[1] for j in range(self.num_fcs)])

    @staticmethod
    def _attr(name: str) -> str:
        return name.replace(".", "_")

    @staticmethod
    def _transposed(name: str, tensor: torch.Tensor) -> bool:
        return name.startswith("fcs.") and tensor.dim() == 2

    @classmethod
    def _stacked(cls, name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(tensors)
        return stacked.transpose(1, 2).contiguous() if cls._transposed(name, tensors[0]) else stacked

    def tensor(self, name: str) -> torch.Tensor:
        """The stacked tensor of ``name`` (a ``Net`` state-dict key)."""
        return getattr(self, self._attr(name))

    def member_state(self, k: int, tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Member ``k``'s state dict, copies in its ``Net``'s layout and the stack's dtype (of ``tensors``: stacked
        tensors by name, e.g. ``kept``; default the stack's own)."""
        state = {}
        for name in self.names:
            tensor = (self.tensor(name) if tensors is None else tensors[name])[k].detach()
            state[name] = (tensor.t() if self._transposed(name, tensor) else tensor).contiguous().clone()
        return state

    def keep(self, members: Sequence[int]) -> None:
        """Copy ``members``' current tensors into ``kept`` (their early-stopping states), every member at once: one
        elementwise copy per tensor, the members to copy sent to the device without a host sync."""
        current = {name: self.tensor(name).detach() for name in self.names}
        if self.kept is None:
            self.kept = {name: tensor.clone() for name, tensor in current.items()}
            return
        device = current[self.names[0]].device
        chosen = torch.zeros(self.size, dtype=torch.bool)
        chosen[list(members)] = True
        chosen = training.pinned(chosen, device).to(device, non_blocking=True)
        for name, tensor in current.items():
            where = chosen.view(-1, *[1] * (tensor.dim() - 1))
            torch.where(where, tensor, self.kept[name], out=self.kept[name])

    def _refresh(self) -> None:
        """Float keep-masks ([K, ...], 1 kept) of the masked layers where some member prunes; pruned values
        restored."""
        self._keep = {}
        for layer in self.masked:
            mask = self.tensor(f"{layer}.mask")
            if not bool(mask.all()):
                self._keep[layer] = mask.to(self.tensor(f"{layer}.weight").dtype)
        self.restore_frozen()

    def restore_frozen(self) -> None:
        """Write each member's frozen values back into its pruned positions (exact: ``w * keep + frozen``)."""
        with torch.no_grad():
            for layer, keep in self._keep.items():
                weight = self.tensor(f"{layer}.weight")
                torch.addcmul(self.tensor(f"{layer}.frozen"), weight, keep, out=weight.data)

    def mask_grads(self) -> None:
        """Zero the gradient of every pruned weight (so Adam's moments stay 0 there and the weight never moves)."""
        for layer, keep in self._keep.items():
            grad = self.tensor(f"{layer}.weight").grad
            if grad is not None:
                grad.mul_(keep)

    # ------------------------------------------------------------------------------------------- Supermask layers

    def _uniforms(self) -> dict[str, torch.Tensor]:
        """One uniform sample per weight of every Supermask layer for every member, stacked like the weights: from
        the population's ``noise`` generator in one draw (a device), else from each member's own generator in its
        own layout and order (what ``supermask.bernoulli`` draws in the single run)."""
        weights = {layer: self.tensor(f"{layer}.weight") for layer in self.supermask}
        if self.noise is not None:
            first = next(iter(weights.values()))
            flat = torch.rand(sum(w.numel() for w in weights.values()), generator=self.noise, device=first.device,
                              dtype=first.dtype)
            return {layer: part.view(w.shape)
                    for (layer, w), part in zip(weights.items(), flat.split([w.numel() for w in weights.values()]))}
        uniforms = {}
        for layer, weight in weights.items():  # layer by layer, as the single runs' forward passes draw
            shape = weight.shape[1:][::-1] if self._transposed(f"{layer}.weight", weight[0]) else weight.shape[1:]
            draws = [torch.rand(shape, generator=g, device=generator_device(g)) for g in self.generators]
            uniforms[layer] = self._stacked(f"{layer}.weight", draws).to(weight.device)
        return uniforms

    def _masks(self) -> dict[str, torch.Tensor]:
        """Each Supermask layer's stacked mask for this forward pass: the fixed one (``fixed_masks``) or a sample
        whose gradient passes straight through to ``sigmoid(score)``."""
        if self._fixed is not None or not self.supermask:
            return self._fixed or {}
        uniforms = self._uniforms()
        return {layer: _StraightThrough.apply(torch.sigmoid(self.tensor(f"{layer}.scores")), uniforms[layer])
                for layer in self.supermask}

    @contextlib.contextmanager
    def fixed_masks(self):
        """Within the block, each Supermask layer uses one mask per member drawn on entry (as ``evaluate`` of one
        net draws one per pass); nothing for masked nets."""
        if not self.supermask:
            yield
            return
        with torch.no_grad():
            uniforms = self._uniforms()
            self._fixed = {layer: (uniforms[layer] < torch.sigmoid(self.tensor(f"{layer}.scores"))).to(
                self.tensor(f"{layer}.weight").dtype) for layer in self.supermask}
        try:
            yield
        finally:
            self._fixed = None

    def expected_densities(self, members: Sequence[int] | None = None) -> list[float]:
        """Each member's (of ``members``, default all) mean keep probability sigmoid(score) over all Supermask
        weights, read from the device at once."""
        members = range(self.size) if members is None else members
        scores = [self.tensor(f"{layer}.scores").detach() for layer in self.supermask]
        sums = torch.stack([torch.sigmoid(s[k]).sum() for k in members for s in scores]).tolist()
        total = sum(s[0].numel() for s in scores)
        return [sum(sums[i * len(scores):(i + 1) * len(scores)]) / total for i in range(len(members))]

    def expected_density(self, k: int) -> float:
        """Member ``k``'s mean keep probability sigmoid(score) over all Supermask weights."""
        return self.expected_densities([k])[0]

    def weight(self, layer: str, masks: dict[str, torch.Tensor]) -> torch.Tensor:
        """The stacked weight ``layer`` computes with: a masked layer's weight, or a Supermask layer's frozen weight
        times its mask in ``masks`` (``_masks``; rescaled per member with dynamic weight rescaling)."""
        weight = self.tensor(f"{layer}.weight")
        if layer not in self.supermask:
            return weight
        mask = masks[layer]
        weight = weight * mask
        if self._rescales[layer]:
            factor = (mask[0].numel() / mask.flatten(1).sum(1).clamp_min(1.0)).detach()
            factor = torch.where(self.supermask[layer], factor, torch.ones_like(factor))
            weight = weight * factor.view(-1, *[1] * (mask.dim() - 1))
        return weight

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """Logits ``[K, B, classes]``: member k's net on ``x[k]`` (``x`` is ``[K, B, C, H, W]``), or every member
        on the same ``x`` (``[B, C, H, W]``) when ``shared``."""
        K = self.size
        masks = self._masks()
        if self.num_convs:
            if shared:
                B = x.shape[0]
                h = x.repeat(1, K, 1, 1)  # [B, K*C, H, W]
            else:
                B = x.shape[1]
                h = x.transpose(0, 1).reshape(B, K * x.shape[2], *x.shape[3:])
            for i, pool in enumerate(self.pool_after):
                w, b = self.weight(f"convs.{i}", masks), self.tensor(f"convs.{i}.bias")
                h = F.relu(F.conv2d(h, w.flatten(0, 1), b.flatten(), padding=1, groups=K))
                if pool:
                    h = F.max_pool2d(h, 2)
            h = h.view(B, K, -1).transpose(0, 1)  # [K, B, features], each member's flatten(1) order
        else:
            h = x.flatten(1) if shared else x.flatten(2)
        last = self.num_fcs - 1
        for j in range(self.num_fcs):
            w, b = self.weight(f"fcs.{j}", masks), self.tensor(f"fcs.{j}.bias")
            if h.dim() == 2:  # the shared input of the first layer: [B, in] @ [K, in, out]
                h = torch.matmul(h, w) + b.unsqueeze(1)
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if j < last:
                h = F.relu(h)
        return h


def make_optimizer(stack: Stack, name: str = "adam", lr: float = 1e-3, graphs: bool = False,
                   **kwargs) -> torch.optim.Optimizer:
    """One optimizer over the stacked parameters (the registry's, e.g. fused Adam; ``graphs``: built to be captured
    in a CUDA graph): elementwise optimizers over a stack equal one per member. With weight decay, pruned weights
    are restored after every step."""
    optimizer = training.build_optimizer([p for p in stack.parameters() if p.requires_grad], name, lr, graphs,
                                         **kwargs)
    if stack._keep and any(group.get("weight_decay", 0) for group in optimizer.param_groups):
        optimizer.register_step_post_hook(lambda opt, args, kw: stack.restore_frozen())
    return optimizer


def train_step(stack: Stack, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               autograd: bool | None = None) -> torch.Tensor:
    """One lockstep optimizer step: member k on its batch ``(x[k], y[k])``; returns the K (detached) losses.

    Fully connected masked stacks compute their gradients with ``fc_gradients`` (no autograd graph), every other
    stack with autograd; ``autograd=True`` forces autograd (tests compare the two)."""
    if autograd is None:
        autograd = bool(stack.num_convs or stack.supermask)
    if autograd:
        optimizer.zero_grad(set_to_none=True)
        logits = stack(x)
        K, B = y.shape
        losses = F.cross_entropy(logits.reshape(K * B, -1), y.reshape(-1), reduction="none").view(K, B).mean(1)
        losses.sum().backward()
        stack.mask_grads()
    else:
        losses = fc_gradients(stack, x, y)  # overwrites every gradient, pruned ones zeroed
    optimizer.step()
    return losses.detach()


@torch.no_grad()
def fc_gradients(stack: Stack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The gradients autograd gives a fully connected masked stack (each member's mean cross-entropy on its batch),
    written to the parameters' ``.grad`` by hand: forward with ``baddbmm`` keeping each layer's output, then
    (softmax - one-hot) / B backwards through the layers (ReLU passes where its output was positive), each weight
    gradient zeroed at pruned weights (``mask_grads``) while it is still in cache. The same products as autograd's
    (float64: equal to 1e-14). Gradients are written into the existing ``.grad`` tensors (``out=``), so a step
    allocates no parameter-sized memory; with no autograd graph either, a step costs 5-20% less on the CPU than
    autograd's (``bench/population.py``). Returns the K losses."""
    if stack.num_convs or stack.supermask:
        raise ValueError("fc_gradients computes fully connected masked stacks only")
    K, B = y.shape
    outputs = [x.flatten(2)]
    last = stack.num_fcs - 1
    for j in range(stack.num_fcs):
        h = torch.baddbmm(stack.tensor(f"fcs.{j}.bias").unsqueeze(1), outputs[-1], stack.tensor(f"fcs.{j}.weight"))
        outputs.append(h.clamp_min_(0) if j < last else h)
    log_probs = torch.log_softmax(outputs.pop(), 2)
    target = y.unsqueeze(2)
    losses = log_probs.gather(2, target).squeeze(2).mean(1).neg_()
    grad = log_probs.exp_()  # d(mean loss)/d logits = (softmax - one-hot) / B
    classes = torch.arange(grad.shape[2], device=grad.device)
    grad.sub_((target == classes).to(grad.dtype))  # the one-hot by comparison: no scatter (no sort, no sync)
    grad.div_(B)
    for j in range(last, -1, -1):
        weight, bias = stack.tensor(f"fcs.{j}.weight"), stack.tensor(f"fcs.{j}.bias")
        for param in (weight, bias):
            if param.grad is None:
                param.grad = torch.empty_like(param)
        torch.bmm(outputs[j].transpose(1, 2), grad, out=weight.grad)
        keep = stack._keep.get(f"fcs.{j}")
        if keep is not None:
            weight.grad.mul_(keep)
        torch.sum(grad, 1, out=bias.grad)
        if j:
            grad = torch.bmm(grad, weight.transpose(1, 2)).mul_(outputs[j] > 0)
    return losses


def gather(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Member k's batch ``(x[idx[k]], y[idx[k]])`` for every member: ``[K, B, ...]`` and ``[K, B]``."""
    flat = idx.reshape(-1)
    return x.index_select(0, flat).view(*idx.shape, *x.shape[1:]), y.index_select(0, flat).view(idx.shape)


# on a GPU, evaluation runs all members on chunks of examples whose widest activation holds about this many values
# (2**28: 1 GiB in float32); on the CPU a chunk holds batch_size // K examples (one net's evaluation memory)
EVAL_VALUES = 2 ** 28


def eval_chunk(stack: Stack, batch_size: int, device: torch.device) -> int:
    """Examples per chunk of ``scores`` (``EVAL_VALUES``)."""
    if device.type == "cpu":
        return max(1, batch_size // stack.size)
    return max(1, min(batch_size, EVAL_VALUES // (stack.size * stack.widest)))


@torch.no_grad()
def scores(stack: Stack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
    """Every member's mean cross-entropy loss and top-1 accuracy on the same ``(x, y)``: ``[K, 2]`` float64 on the
    device, with no host sync. A pass over ``batch_size`` examples is what one net's ``masking.evaluation``
    takes at once (one Supermask sample per member per pass); within it all members run together on chunks
    (``eval_chunk``)."""
    chunk = eval_chunk(stack, batch_size, x.device)
    totals = torch.zeros(stack.size, 2, dtype=torch.float64, device=x.device)  # loss sum, correct count
    for outer in range(0, len(x), batch_size):
        with stack.fixed_masks():
            for start in range(outer, min(outer + batch_size, len(x)), chunk):
                end = min(start + chunk, outer + batch_size)
                logits = stack(x[start:end], shared=True)  # [K, b, classes]
                target = y[start:end]
                K, b, C = logits.shape
                losses = F.cross_entropy(logits.reshape(K * b, C), target.repeat(K), reduction="none").view(K, b)
                totals[:, 0] += losses.sum(1).double()
                totals[:, 1] += (logits.argmax(2) == target).sum(1)
    return totals / len(x)


def evaluate(stack: Stack, x: torch.Tensor, y: torch.Tensor, batch_size: int = 10_000) -> list[tuple[float, float]]:
    """Every member's (mean cross-entropy loss, top-1 accuracy) on the same ``(x, y)`` (``scores``, read once)."""
    return [(loss, acc) for loss, acc in scores(stack, x, y, batch_size).tolist()]


Split = tuple[torch.Tensor, torch.Tensor]


def fit(stack: Stack, optimizer: torch.optim.Optimizer, train: Split, val: Split, iterations: int, batch_size: int,
        eval_every: int, generators: Sequence[torch.Generator | None],
        on_eval: Callable[[int, dict[str, float]], None] | None = None,
        graphs: bool = False) -> list[FitResult | MemberFailed]:
    """``training.fit`` for every member at once, through the same loop (``training.train_loop``): member k draws
    its batches from ``generators[k]``, is evaluated every ``eval_every`` steps (and after the last) and keeps its
    own best state (``member_state``). ``graphs``: the step runs as a CUDA graph (the optimizer built for it).

    Returns one ``FitResult`` per member (``seconds`` is the population's wall time), or a ``MemberFailed`` for a
    member whose training or validation loss became non-finite; ``on_eval(k, point)`` is called for live members.
    """
    trainee = stack_trainee(stack, optimizer, train, val, batch_size, generators, graphs)
    return [MemberFailed(f"member {k}: {result}") if isinstance(result, Diverged) else result
            for k, result in enumerate(training.train_loop(trainee, iterations, eval_every, on_eval))]


def stack_trainee(stack: Stack, optimizer: torch.optim.Optimizer, train: Split, val: Split, batch_size: int,
                  generators: Sequence[torch.Generator | None], graphs: bool = False) -> Trainee:
    """What ``fit`` trains: every member on its batch (``train_step``), member k's batches drawn from
    ``generators[k]``; a CUDA graph with ``graphs`` (the population's noise generator registered with it)."""
    if len(generators) != stack.size:
        raise ValueError(f"{stack.size} members need {stack.size} generators, got {len(generators)}")
    x, y = train
    order = training.BatchOrder(len(x), batch_size, generators, x.device)
    stack.kept = None  # this training's early-stopping states only
    return training.make_trainee(order, lambda indices: train_step(stack, optimizer, *gather(x, y, indices)),
                                 lambda: scores(stack, *val), stack.keep,
                                 lambda k: stack.member_state(k, stack.kept), x.dtype, graphs,
                                 [stack.noise] if stack.noise is not None else [])
