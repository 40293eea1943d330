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

The step keeps to the device: the batch order is drawn on the host once per epoch and copied over ahead of the
step (``BatchOrder``: pinned memory, an asynchronous copy; a step reads its indices at a cursor on the device),
the training losses are summed on the device, and ``train_loop`` reads results once per evaluation point. On a GPU
the step's device work runs as a CUDA graph (``GraphedStep``, ``training.graphs``: one launch per step instead of
one per kernel; the same kernels, so the same numbers as the eager step).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import time
import weakref
from typing import Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from masking.evaluation import scores
from masking.layers import guard_optimizer, masked_layers
from masking.rng import generator_device, randperm
from ticketlab.params import choice, number, param
from ticketlab.registry import Registry

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

    iterations: int = param(help="training steps per round (a Supermask run: its steps); None: the paper's for "
                            "the arch (50k fc, 20k/25k/30k conv, 64k resnet20)",
                            check=number(low=1, integer=True, none=True), config=None)
    lr: float = param(help="learning rate; None: the paper's for the arch (lottery) or 0.1 on the scores (supermask)",
                      check=number(low=0, low_open=True, none=True), config=None)
    batch_size: int = param(60, "examples per step", number(low=1, integer=True))
    eval_every: int = param(100, "steps between validation evaluations (early stopping keeps the best)",
                            number(low=1, integer=True))
    optimizer: str = param("adam", "{choices} (adam: torch's fused Adam; sgd_he2016: ResNet's SGD, momentum 0.9, "
                           "wd 1e-4, lr / 10 at 32k and 48k)", choice(lambda: OPTIMIZERS.names()))


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


def prepare_execution(threads: int | None, device: str = "auto", graphs: str = "auto") -> tuple[torch.device, dict]:
    """Apply the process-wide settings for a run (``cpu_settings``, ``device_settings``) and return the device it
    trains on (``resolve_device``) and its execution info (``execution_info`` plus the ``requested`` device and
    the ``graphs`` setting)."""
    cpu_settings(threads)
    resolved = resolve_device(device)
    device_settings(resolved)
    return resolved, {**execution_info(resolved), "requested": device, "graphs": check_graphs(graphs)}


def cpu_settings(threads: int | None = None) -> None:
    """Process-wide CPU settings for training: flush denormal floats to zero (Adam's second moments go denormal
    and make a LeNet step 2x slower on x86 otherwise) and, when given, the number of intra-op threads."""
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(int(threads))


# training.graphs (an execution setting: it changes how a step runs, never what it computes): "auto" runs the step
# as a CUDA graph on a GPU when the optimizer allows it, "off" never
GRAPHS_CHOICES = ("auto", "off")
# the optimizers whose step a CUDA graph can hold (no hyperparameter changed from Python between steps, unlike
# sgd_he2016's learning-rate decay), with the options that let it: fused Adam computes the same with capturable=True
# (its step count lives on the device either way; torch refuses to capture it without the flag)
GRAPH_OPTIONS = {"adam": {"capturable": True}}


def check_graphs(setting: str) -> str:
    """``setting`` when it is a ``training.graphs`` value; a ValueError naming the valid choices otherwise."""
    if setting not in GRAPHS_CHOICES:
        raise ValueError(f"training.graphs={setting!r} is not valid; valid choices: {', '.join(GRAPHS_CHOICES)}")
    return setting


def use_graphs(setting: str, device: str | torch.device, optimizer: str) -> bool:
    """Whether training steps on ``device`` with ``optimizer`` run as CUDA graphs under ``training.graphs=setting``:
    ``auto`` on a CUDA device with an optimizer in ``GRAPH_OPTIONS``, ``off`` never."""
    return (check_graphs(setting) == "auto" and torch.device(device).type == "cuda" and torch.cuda.is_available()
            and optimizer in GRAPH_OPTIONS)


def make_optimizer(model: nn.Module, name: str = "adam", lr: float = 1e-3, graphs: bool = False,
                   **kwargs) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``model``'s trainable parameters (``graphs``: built to be captured in a CUDA graph,
    ``GRAPH_OPTIONS``); masked layers are guarded."""
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], name, lr, graphs, **kwargs)
    if masked_layers(model) and any(group.get("weight_decay", 0) for group in optimizer.param_groups):
        guard_optimizer(optimizer, model)
    return optimizer


def build_optimizer(params: list[torch.Tensor], name: str, lr: float, graphs: bool = False,
                    **kwargs) -> torch.optim.Optimizer:
    """The registry's optimizer ``name`` over ``params`` (with ``GRAPH_OPTIONS[name]`` when ``graphs``)."""
    build = OPTIMIZERS.get(name)
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ValueError(f"learning rate must be a positive number, got {lr!r}")
    return build(params, lr, **(GRAPH_OPTIONS[name] if graphs else {}), **kwargs)


def pinned(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` ready to be copied to ``device`` without a host sync: a host tensor bound for a GPU in pinned
    memory (a copy from pageable memory waits for the device's queue), else as it is."""
    return tensor.pin_memory() if tensor.device.type == "cpu" and device.type == "cuda" else tensor


class BatchOrder:
    """The batch order of K members (one: a single run), kept on ``device``: each epoch, member k's permutation of
    the training examples drawn from ``generators[k]`` where the generator lives (the CPU for ``rng`` streams, so
    every device draws the same order), the last partial batch dropped.

    ``advance()`` (host, before each step) starts the next epoch when one ends: its permutations go to the device
    in one copy, asynchronous from pinned memory on a GPU (no host sync), drawn ahead in a background thread while
    the epoch before trains (a GPU with CPU generators); ``indices()`` (device only: fit for a CUDA graph) reads the
    step's ``[K, batch_size]`` indices at a cursor on the device and moves the cursor on."""

    def __init__(self, num_examples: int, batch_size: int, generators: Sequence[torch.Generator | None],
                 device: str | torch.device = "cpu"):
        if not 0 < batch_size <= num_examples:
            raise ValueError(f"batch size must be in [1, {num_examples}], got {batch_size}")
        self.num_examples, self.batch_size, self.generators = num_examples, batch_size, list(generators)
        self.members, self.device = len(self.generators), torch.device(device)
        self.per_epoch = num_examples // batch_size
        self._perms = torch.zeros(self.members, self.per_epoch * batch_size, dtype=torch.int64, device=device)
        self._batches = self._perms.view(self.members, self.per_epoch, batch_size)
        self._cursor = torch.zeros(1, dtype=torch.int64, device=device)
        self._taken = 0
        self._next: concurrent.futures.Future | None = None
        self._ahead = None
        if self.device.type == "cuda" and all(g is not None and g.device.type == "cpu" for g in self.generators):
            self._ahead = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batch-order")
            weakref.finalize(self, self._ahead.shutdown, wait=False)

    def _draw(self) -> torch.Tensor:
        """The next epoch's permutations, ``[K, per_epoch * batch_size]``, where the generators live."""
        used = self.per_epoch * self.batch_size
        return torch.stack([randperm(self.num_examples, g, generator_device(g))[:used] for g in self.generators])

    def advance(self) -> None:
        """Host side of a step: at an epoch's start, that epoch's permutations to the device."""
        if self._taken % self.per_epoch == 0:
            if self._ahead is None:
                perms = self._draw()
            else:
                perms = (self._next or self._ahead.submit(self._draw)).result()
                self._next = self._ahead.submit(self._draw)
            self._perms.copy_(pinned(perms, self.device), non_blocking=True)
            self._cursor.zero_()
        self._taken += 1

    def indices(self) -> torch.Tensor:
        """The step's ``[K, batch_size]`` example indices, on the device (the cursor moves on there)."""
        indices = self._batches.index_select(1, self._cursor).view(self.members, self.batch_size)
        self._cursor.add_(1)
        return indices


def batch_indices(num_examples: int, batch_size: int, generator: torch.Generator | None,
                  device: str | torch.device = "cpu") -> Iterator[torch.Tensor]:
    """Endless mini-batches of example indices on ``device``: a fresh permutation from ``generator`` (drawn where
    the generator lives, the CPU for ``rng`` streams) each epoch, the last partial batch of an epoch dropped (the
    batch order of one net: ``BatchOrder`` of one member)."""
    order = BatchOrder(num_examples, batch_size, [generator], device)
    while True:
        order.advance()
        yield order.indices()[0]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the batch ``(x, y)``; returns the (detached) loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fit_config(model: nn.Module, data: DataSplits, config: TrainingConfig, generator: torch.Generator | None,
               on_eval: Callable[[dict[str, float]], None] | None = None,
               on_progress: Callable[[int], None] | None = None, graphs: str = "auto") -> "FitResult":
    """``fit`` with a fresh optimizer per ``config`` on ``data``'s training and validation splits; ``graphs`` is the
    ``training.graphs`` setting (``use_graphs``)."""
    graphed = use_graphs(graphs, data.train[0].device, config.optimizer)
    optimizer = make_optimizer(model, config.optimizer, config.lr, graphed)
    return fit(model, optimizer, data.train, data.val, config.iterations, config.batch_size, config.eval_every,
               generator, on_eval, on_progress, graphed)


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
    ``step()`` takes one optimizer step of every member and adds their batch losses to ``losses`` (``[members]``,
    on the device; the loop reads and zeroes it at evaluations); ``evaluate()`` gives every member's validation
    loss and accuracy, ``[members, 2]`` float64 on the device; ``keep(members)`` copies those members' current
    states, on the device, as their early-stopping states (all at once: one copy per tensor for a population) and
    ``kept(k)`` is member k's last kept state. ``make_trainee`` builds one."""

    members: int
    step: Callable[[], None]
    losses: torch.Tensor
    evaluate: Callable[[], torch.Tensor]
    keep: Callable[[list[int]], None]
    kept: Callable[[int], dict[str, torch.Tensor]]


class GraphedStep:
    """A training step's device work as a CUDA graph: ``work`` runs eagerly for its first ``WARMUP`` calls (on a
    side stream, as torch's graph capture wants; they create the optimizer's state, cuBLAS handles and
    workspaces), is then captured once (its kernels recorded, not run) and every call from then on replays the
    graph: one launch for the whole step instead of one per kernel, the same kernels on the same memory, so the
    numbers are those of the eager step.

    ``work`` must be fit for a graph: no host sync (one fails the capture), the same tensors at every call, random
    draws from the CUDA generators in ``generators`` (registered with the graph: each replay draws what the eager
    step would draw)."""

    WARMUP = 3

    def __init__(self, work: Callable[[], None], generators: Sequence[torch.Generator] = ()):
        self.work = work
        self.generators = [g for g in generators if g.device.type == "cuda"]
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self._side = torch.cuda.Stream()

    def __call__(self) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        self.calls += 1
        if self.calls <= self.WARMUP:
            current = torch.cuda.current_stream()
            self._side.wait_stream(current)
            with torch.cuda.stream(self._side):
                self.work()
            current.wait_stream(self._side)
            return
        self.graph = self.capture()
        self.graph.replay()

    def capture(self) -> torch.cuda.CUDAGraph:
        """The step captured as a CUDA graph (torch synchronizes the device once before it)."""
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph):
                self.work()
        except RuntimeError as error:
            raise RuntimeError(f"the training step could not be captured as a CUDA graph ({error}); "
                               "training.graphs=off runs it eagerly") from error
        return graph


def make_trainee(order: BatchOrder, work: Callable[[torch.Tensor], torch.Tensor],
                 evaluate: Callable[[], torch.Tensor], keep: Callable[[list[int]], None],
                 kept: Callable[[int], dict[str, torch.Tensor]], dtype: torch.dtype, graphs: bool = False,
                 generators: Sequence[torch.Generator] = ()) -> Trainee:
    """The ``Trainee`` of ``order.members`` members whose step is: the batch order's host part
    (``order.advance()``), then on the device the step's indices (``order.indices()``), ``work(indices)`` (one
    optimizer step of every member on its batch, returning the ``[K]`` batch losses) and their sum into
    ``losses``. With ``graphs`` that device part runs as a CUDA graph (``GraphedStep``; ``generators``: the CUDA
    generators the step draws from)."""
    losses = torch.zeros(order.members, dtype=dtype, device=order.device)

    def device_step() -> None:
        losses.add_(work(order.indices()))

    run = GraphedStep(device_step, generators) if graphs else device_step

    def step() -> None:
        order.advance()
        run()

    return Trainee(order.members, step, losses, evaluate, keep, kept)


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
    best: list[tuple[float, float, int] | None] = [None] * trainee.members
    failed: dict[int, Diverged] = {}
    curves: list[list[dict]] = [[] for _ in range(trainee.members)]
    loss_count = 0
    for it in range(1, iterations + 1):
        trainee.step()
        loss_count += 1
        if it not in stops:
            continue
        if it in points:
            # the one read of the steps' results per evaluation: validation loss and accuracy, summed training loss
            rows = torch.cat([trainee.evaluate(), trainee.losses.double().unsqueeze(1)], 1).tolist()
            trainee.losses.zero_()
            improved = []
            for k, (val_loss, val_acc, train_loss) in enumerate(rows):
                if k in failed:
                    continue
                point = {"iteration": it, "train_loss": train_loss / loss_count, "val_loss": val_loss,
                         "val_acc": val_acc}
                if not (math.isfinite(point["train_loss"]) and math.isfinite(val_loss)):
                    failed[k] = Diverged(f"non-finite loss at iteration {it} (train {point['train_loss']}, "
                                         f"validation {val_loss})")
                    continue
                curves[k].append(point)
                if best[k] is None or val_loss < best[k][0]:
                    best[k] = (val_loss, val_acc, it)
                    improved.append(k)
                if on_eval is not None:
                    on_eval(k, point)
            if improved:
                trainee.keep(improved)
            loss_count = 0
        if on_progress is not None:
            on_progress(it)
    seconds = time.perf_counter() - start
    return [failed[k] if k in failed else FitResult(best[k][2], best[k][0], best[k][1], trainee.kept(k), curves[k],
                                                    seconds) for k in range(trainee.members)]


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
    graphs: bool = False,
) -> FitResult:
    """Train ``iterations`` steps on in-memory data, evaluating validation loss/accuracy every ``eval_every`` steps
    (and after the last); keep a copy of the state with the lowest validation loss (``train_loop``, as a
    population of one). A non-finite loss raises ``Diverged``. ``graphs``: the step runs as a CUDA graph (the
    optimizer built for it: ``make_optimizer(..., graphs=True)``).

    Only what early stopping needs is evaluated here: test the returned ``best_state`` (and the final state) once.
    ``on_progress(iteration)`` is called every ``PROGRESS_EVERY`` steps and after each evaluation (a progress
    display).
    """
    model.train()
    trainee = net_trainee(model, optimizer, train, val, batch_size, generator, graphs)
    result, = train_loop(trainee, iterations, eval_every,
                         None if on_eval is None else (lambda k, point: on_eval(point)), on_progress)
    if isinstance(result, Diverged):
        raise result
    return result


def net_trainee(model: nn.Module, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
                val: tuple[torch.Tensor, torch.Tensor], batch_size: int, generator: torch.Generator | None,
                graphs: bool = False) -> Trainee:
    """What ``fit`` trains: ``model`` as a population of one, its batches drawn from ``generator``, a step
    ``train_step`` (a CUDA graph with ``graphs``; the random generators its modules hold are registered with it)."""
    x, y = train

    def work(indices: torch.Tensor) -> torch.Tensor:
        batch = indices[0]
        return train_step(model, optimizer, x.index_select(0, batch), y.index_select(0, batch)).reshape(1)

    best: dict[str, torch.Tensor] = {}

    def keep(members: list[int]) -> None:
        best.clear()
        best.update({name: v.detach().clone() for name, v in model.state_dict().items()})

    generators = {id(g): g for m in model.modules() if isinstance(g := getattr(m, "generator", None),
                                                                  torch.Generator)}
    return make_trainee(BatchOrder(len(x), batch_size, [generator], x.device), work,
                        lambda: scores(model, *val).unsqueeze(0), keep, lambda k: best, x.dtype, graphs,
                        list(generators.values()))
