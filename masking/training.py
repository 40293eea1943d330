"""Training every ticketlab net: devices, optimizer registry, seeded batch order, the step, and ``fit`` with early
stopping.

Devices (``resolve_device``): ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N``. On CUDA,
``device_settings`` makes torch deterministic where it can (``torch.use_deterministic_algorithms(True,
warn_only=True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` set before CUDA initializes, no cuDNN autotuning); an op
without a deterministic CUDA kernel warns instead of stopping the run. Float32 matmuls and cuDNN convolutions run in
full IEEE float32 on CUDA (``FP32_PRECISION``, set through torch's ``fp32_precision`` API; torch's own default runs
convolutions in TF32 on Ampere and later GPUs), and every run records the precision it ran at
(``execution_info``: ``fp32_precision``). Random draws (batch order, tie-breaking, treatments, initial weights) come
from CPU generators and are moved to the device, so CPU and CUDA runs of a seed start from the same weights and draw
the same batch order; their floating-point results differ (other kernels).

``make_optimizer`` builds the optimizer over the trainable parameters only (a Supermask's scores, a masked net's
weights and biases) with the fastest stock settings (``fused=True`` where torch has it), and guards masked layers
(``layers.guard_optimizer``) so pruned weights stay frozen under any optimizer setting.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Iterator, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from masking.evaluation import evaluate
from masking.layers import guard_optimizer, masked_layers
from masking.registry import Registry
from masking.rng import randperm

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
OPTIMIZERS.add("adam", lambda params, lr, **kw: torch.optim.Adam(params, lr=lr, fused=True, **kw))
OPTIMIZERS.add("sgd", lambda params, lr, **kw: torch.optim.SGD(params, lr=lr, **kw))


def step_decay(optimizer: torch.optim.Optimizer, milestones: tuple[int, ...], factor: float = 0.1):
    """Multiply the learning rate by ``factor`` after ``optimizer.step()`` number m, for each m in ``milestones``
    (a step post-hook, so ``fit`` needs no scheduler; a new optimizer, as each round makes, starts over)."""
    steps = 0

    def decay(opt, args, kwargs):
        nonlocal steps
        steps += 1
        if steps in milestones:
            for group in opt.param_groups:
                group["lr"] *= factor

    optimizer.register_step_post_hook(decay)
    return optimizer


@OPTIMIZERS.register("sgd_he2016")
def sgd_he2016(params, lr, **kw):
    """He et al. 2016's CIFAR ResNet training: SGD, momentum 0.9, weight decay 1e-4, lr / 10 at 32k and 48k steps."""
    return step_decay(torch.optim.SGD(params, lr=lr, **{"momentum": 0.9, "weight_decay": 1e-4, **kw}),
                      (32_000, 48_000))
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


DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (torch's reproducibility notes)


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``name`` means on this machine; a ValueError (one line: the bad value and the devices this
    machine has) when it names none. Sets ``CUBLAS_WORKSPACE_CONFIG`` first, before anything initializes CUDA."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    valid = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(count)] if count else [])
    if name == "auto":
        return torch.device("cuda:0" if count else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if isinstance(name, str) and name.startswith("cuda") and count:
        index = name[5:] if name.startswith("cuda:") else ("0" if name == "cuda" else None)
        if index is not None and index.isdigit() and int(index) < count:
            return torch.device(f"cuda:{int(index)}")
    why = "this machine has no CUDA device" if not count else f"this machine has {count} CUDA device(s)"
    raise ValueError(f"training.device={name!r} is not valid: {why}; valid choices: {', '.join(valid)}")


# Float32 matmuls and convolutions on CUDA: "ieee" (full float32) or "tf32" (inputs rounded to TF32's 10-bit mantissa,
# faster on tensor cores). ticketlab's choice: ieee, so a GPU run computes what a CPU run computes up to rounding order
# (torch 2.11-2.14 default to TF32 for cuDNN convolutions and to ieee for matmuls, so conv nets and populations, whose
# convolutions are grouped, would train in TF32 silently). Set through torch's fp32_precision API only, never mixed
# with the legacy allow_tf32 flags (reading those after the new API was used can raise in torch).
FP32_PRECISION = "ieee"


def cuda_precision_settings(precision: str = FP32_PRECISION) -> None:
    """Float32 matmuls (cuBLAS) and convolutions (cuDNN) at ``precision`` (``ieee`` or ``tf32``), process-wide."""
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision


def _effective(*chain) -> str:
    """The first setting of a backend's fp32_precision chain (leaf first) that is not "none" (which inherits);
    "ieee" when all inherit (torch's float32 without reduced-precision math)."""
    return next((value for value in chain if value != "none"), "ieee")


def fp32_precision(device: torch.device) -> str:
    """The precision float32 matmuls and convolutions run at on ``device``: ``ieee``, ``tf32`` (``bf16`` is
    possible on some CPUs), or ``matmul=X,conv=Y`` when the two differ."""
    backends = torch.backends
    if device.type == "cuda":  # (torch.backends.cudnn.fp32_precision is the whole CUDA backend's setting)
        cuda = backends.cudnn.fp32_precision
        matmul = _effective(backends.cuda.matmul.fp32_precision, cuda, backends.fp32_precision)
        conv = _effective(backends.cudnn.conv.fp32_precision, cuda, backends.fp32_precision)
    else:
        mkldnn = backends.mkldnn
        matmul = _effective(mkldnn.matmul.fp32_precision, mkldnn.fp32_precision, backends.fp32_precision)
        conv = _effective(mkldnn.conv.fp32_precision, mkldnn.fp32_precision, backends.fp32_precision)
    return matmul if matmul == conv else f"matmul={matmul},conv={conv}"


def device_settings(device: torch.device) -> None:
    """Process-wide settings for training on ``device``: on CUDA, deterministic algorithms where torch has them
    (an op without one warns), no cuDNN benchmark autotuning, full float32 matmuls and convolutions
    (``FP32_PRECISION``: no TF32), and ``device`` as the current CUDA device."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        cuda_precision_settings()
        torch.cuda.set_device(device)


def execution_info(device: torch.device) -> dict:
    """Where a run executes (recorded with it, not part of its condition): device, its name, torch and CUDA
    versions, intra-op threads, whether deterministic algorithms are on, the float32 precision of its matmuls and
    convolutions (``fp32_precision``)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        import platform

        name = platform.processor() or platform.machine()
    return {"device": str(device), "device_name": name, "torch": str(torch.__version__), "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(), "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
            "fp32_precision": fp32_precision(device)}


def prepare_execution(threads: int | None, device: str = "auto") -> tuple[torch.device, dict]:
    """Apply the process-wide settings for a run (``cpu_settings``, ``device_settings``) and return the device it
    trains on (``resolve_device``) and its execution info (``execution_info`` plus the ``requested`` device)."""
    cpu_settings(threads)
    resolved = resolve_device(device)
    device_settings(resolved)
    return resolved, {**execution_info(resolved), "requested": device}


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


def batch_indices(num_examples: int, batch_size: int, generator: torch.Generator | None,
                  device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
    """Endless mini-batches of example indices on ``device``: a fresh permutation from ``generator`` (drawn where
    the generator lives, the CPU for ``rng`` streams) each epoch, the last partial batch of an epoch dropped."""
    if not 0 < batch_size <= num_examples:
        raise ValueError(f"batch size must be in [1, {num_examples}], got {batch_size}")
    while True:
        perm = randperm(num_examples, generator, device)
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
               on_eval: Callable[[dict[str, float]], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> "FitResult":
    """``fit`` with a fresh optimizer per ``config`` on ``data``'s training and validation splits."""
    optimizer = make_optimizer(model, config.optimizer, config.lr)
    return fit(model, optimizer, data.train, data.val, config.iterations, config.batch_size, config.eval_every,
               generator, on_eval, on_progress)


PROGRESS_EVERY = 50  # steps between on_progress calls in fit


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


class Diverged(FloatingPointError):
    """A net's training or validation loss became non-finite; the message says which, when and the values."""


@dataclasses.dataclass
class Trainee:
    """What the training loop (``train_loop``) needs of what it trains, one net or a population of them:
    ``step()`` takes one optimizer step of every member and returns their (detached) batch losses, shape
    ``[members]``, on the device; ``evaluate()`` gives every member's (validation loss, accuracy); ``state(k)``
    a copy of member k's state (its early-stopping point)."""

    members: int
    step: Callable[[], torch.Tensor]
    evaluate: Callable[[], list[tuple[float, float]]]
    state: Callable[[int], dict[str, torch.Tensor]]


def train_loop(trainee: Trainee, iterations: int, eval_every: int,
               on_eval: Callable[[int, dict[str, float]], None] | None = None,
               on_progress: Callable[[int], None] | None = None) -> list[FitResult | Diverged]:
    """The training loop of every ticketlab run, a single net or a population (``masking.population``): steps,
    the running training loss (summed on the device, read once per evaluation), validation every ``eval_every``
    steps and after the last, each member's early-stopping point (minimum validation loss) and curve.

    The rule for a diverging net, the same everywhere: a member whose mean training loss since the last
    evaluation or whose validation loss is non-finite at an evaluation is ``Diverged`` (its entry in the result;
    it is no longer evaluated, ``on_eval`` is no longer called for it); the others go on. ``on_eval(k, point)`` at
    every evaluation of a live member; ``on_progress(iteration)`` every ``PROGRESS_EVERY`` steps and after each
    evaluation."""
    if iterations < 1 or eval_every < 1:
        raise ValueError(f"iterations and eval_every must be positive, got {iterations} and {eval_every}")
    start = time.perf_counter()
    points = set(eval_points(iterations, eval_every))
    stops = points | (set(range(PROGRESS_EVERY, iterations + 1, PROGRESS_EVERY)) if on_progress else set())
    best: list[tuple[float, float, int, dict] | None] = [None] * trainee.members
    failed: dict[int, Diverged] = {}
    curves: list[list[dict]] = [[] for _ in range(trainee.members)]
    loss_sum, loss_count = None, 0
    for it in range(1, iterations + 1):
        losses = trainee.step()
        loss_sum = losses.clone() if loss_sum is None else loss_sum.add_(losses)
        loss_count += 1
        if it not in stops:
            continue
        if it in points:
            scores = trainee.evaluate()
            train_losses = loss_sum.tolist()  # the one read of the step's results per evaluation
            for k, (val_loss, val_acc) in enumerate(scores):
                if k in failed:
                    continue
                point = {"iteration": it, "train_loss": train_losses[k] / loss_count, "val_loss": val_loss,
                         "val_acc": val_acc}
                if not (math.isfinite(point["train_loss"]) and math.isfinite(val_loss)):
                    failed[k] = Diverged(f"non-finite loss at iteration {it} (train {point['train_loss']}, "
                                         f"validation {val_loss})")
                    continue
                curves[k].append(point)
                if best[k] is None or val_loss < best[k][0]:
                    best[k] = (val_loss, val_acc, it, trainee.state(k))
                if on_eval is not None:
                    on_eval(k, point)
            loss_sum, loss_count = None, 0
        if on_progress is not None:
            on_progress(it)
    seconds = time.perf_counter() - start
    return [failed[k] if k in failed else FitResult(best[k][2], best[k][0], best[k][1], best[k][3], curves[k], seconds)
            for k in range(trainee.members)]


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
    on_progress: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``iterations`` steps on in-memory data, evaluating validation loss/accuracy every ``eval_every`` steps
    (and after the last); keep a copy of the state with the lowest validation loss (``train_loop``, as a
    population of one). A non-finite loss raises ``Diverged``.

    Only what early stopping needs is evaluated here: test the returned ``best_state`` (and the final state) once.
    ``on_progress(iteration)`` is called every ``PROGRESS_EVERY`` steps and after each evaluation (a progress
    display).
    """
    x, y = train
    order = batch_indices(len(x), batch_size, generator, x.device)

    def step() -> torch.Tensor:
        idx = next(order)
        return train_step(model, optimizer, x.index_select(0, idx), y.index_select(0, idx)).reshape(1)

    model.train()
    trainee = Trainee(1, step, lambda: [evaluate(model, *val)],
                      lambda k: {name: v.detach().clone() for name, v in model.state_dict().items()})
    result, = train_loop(trainee, iterations, eval_every,
                         None if on_eval is None else (lambda k, point: on_eval(point)), on_progress)
    if isinstance(result, Diverged):
        raise result
    return result
