"""A GPU stand-in on the CPU: run ticketlab's procedures while one set of tensors plays the device, and catch what
would break or stall on a real one.

    with DeviceTracer() as tracer:                # tracer.device is the stand-in device, cuda:0
        setup = lottery.setup(spec, data, tracer.device)
        results = list(lottery.iterate_rounds(setup))
    tracer.check()                                # AssertionError listing every violation, with where it happened
    tracer.per_step(), tracer.per_evaluation()    # host syncs per training step / per evaluation point
    tracer.sync_table("step")                     # which syncs, where (kind, op, file:line function) -> count

Every tensor is a real CPU tensor (the numbers are the CPU's). A tensor is on the device when it was moved there
(``Tensor.to``, ``Module.to``), created there (the ``device=`` of a factory function) or computed from device
tensors; such a tensor says so (``tensor.device`` is ``tracer.device``, ``is_cuda`` is True), so the code under
test takes its device paths. Two modes watch the run: a ``TorchFunctionMode`` (the Python API: devices, moves,
generators, ``tolist``/``numpy``) and a ``TorchDispatchMode`` (every aten op, forward and backward: mixing,
transfers, syncs).

Violations (``check`` fails on them):

- ``mixing``: an op with device tensors and host tensors of one or more dimensions (a real device refuses it;
  0-dim host tensors are allowed, as torch takes them as scalars);
- ``generator``: a random draw for the device from a host generator, or for the host from a device generator (real
  devices refuse both, e.g. ``torch.randperm(n, generator=cuda_generator)`` without ``device=``). Device generators
  are what ``masking.rng.seeded(seed, device)`` returns for the device: a CPU generator that says it lives there;
- ``numpy``: ``numpy()`` of a device tensor (a real one must be copied to the host first);
- ``non-blocking copy to host``: its values may be read before they arrived;
- ``non-blocking copy from pageable memory``: a copy to the device from host memory that is not pinned
  (``pin_memory()``, which the tracer models with a copy it marks pinned) is not asynchronous on a GPU;
- ``step sync``: with ``forbid_step_syncs=True``, any host sync inside the training step (but at the sites in
  ``allow``).

Host syncs (counted, each with its op and the ticketlab line that caused it): ``item`` (``item()``, ``float(t)``,
``int(t)``, ``bool(t)`` of a device tensor), ``to host`` (``.cpu()``, ``.to("cpu")``, ``copy_`` into a host tensor,
``tolist()``), ``to device`` (a blocking copy from the host: CUDA waits for the stream before copying from pageable
memory; also host index tensors used on device tensors; a ``non_blocking`` copy from pinned memory is none) and
``data-dependent shape`` (``nonzero``, boolean masks, ``unique``, ... : the host must learn the result's size). A
sync is attributed to a phase: ``step`` (inside a training iteration of ``training.train_loop``, the loop of
``training.fit`` and ``population.fit``: the batch order, the step, the loop's bookkeeping), ``evaluation`` (what
follows the step at an evaluation iteration: validation, the early-stopping copy, callbacks) or ``outside``
(set-up, pruning, treatments, test evaluations). Iterations are counted as the loop calls its trainee's step, so
``per_step`` and ``per_evaluation`` are averages.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import os
import sys
from pathlib import Path
from typing import Callable, Iterable
from unittest import mock

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

aten = torch.ops.aten
REPO = Path(__file__).resolve().parent.parent

# ops whose output size depends on the data: the host waits for the device to learn it
DATA_DEPENDENT = {aten.nonzero, aten.masked_select, aten.unique_consecutive, aten.unique_dim, aten._unique,
                  aten._unique2, aten.bincount}
SCALAR = {aten._local_scalar_dense, aten.equal}  # a Python value of device data: item(), float(t), bool(t), ...
DEVICE_GETTER, IS_CUDA_GETTER, IS_CPU_GETTER = (torch.Tensor.device.__get__, torch.Tensor.is_cuda.__get__,
                                                torch.Tensor.is_cpu.__get__)


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str  # a violation kind or a sync kind (module docstring)
    op: str  # the aten op or Python API call
    phase: str  # step, evaluation, outside
    where: str  # the line that caused it: the innermost frame outside torch and the tracer (path:line function)

    def __str__(self) -> str:
        return f"{self.kind}: {self.op} in the {self.phase} at {self.where}"

    @property
    def site(self) -> str:
        """``where`` without the line number (``masking/rng.py randperm``): stable across edits of the file."""
        path, _, function = self.where.partition(" ")
        return f"{path.rsplit(':', 1)[0]} {function}"


class DeviceGenerator(torch.Generator):
    """A CPU generator standing in for a generator on the tracer's device (its draws are the CPU's)."""

    def __new__(cls, device: torch.device):
        generator = super().__new__(cls)  # a CPU generator (torch.Generator takes its device in __new__)
        generator._device = device
        return generator

    @property
    def device(self) -> torch.device:
        return self._device


@dataclasses.dataclass
class _Fit:
    points: set[int]  # the evaluation iterations
    iteration: int = 0
    stepped: bool = False  # the current iteration's step has returned


class DeviceTracer:
    """See the module docstring. ``device``: the stand-in device (default cuda:0; its type is what the code under
    test sees)."""

    def __init__(self, device: str | torch.device = "cuda:0", forbid_step_syncs: bool = False,
                 allow: Iterable[tuple[str, str]] = ()):
        self.device = torch.device(device)
        if self.device.type == "cpu" or self.device.index is None:
            raise ValueError(f"the stand-in device must be another device type with an index, got {self.device}")
        self.forbid_step_syncs = forbid_step_syncs
        self.allow = set(allow)  # (kind, site) of step syncs that forbid_step_syncs lets pass
        self.violations: list[Event] = []
        self.syncs: list[Event] = []
        self.ops: collections.Counter = collections.Counter()  # (aten op, "device" | "host") -> calls
        self.steps = 0  # training iterations seen
        self.evaluations = 0  # of them, evaluation iterations
        self._storages: dict[int, StorageWeakRef] = {}
        self._pinned: dict[int, StorageWeakRef] = {}  # host storages made by pin_memory()
        self._fits: list[_Fit] = []
        self._moving = 0  # > 0 while the function mode copies between host and device itself
        self._creating = 0  # > 0 while a factory function makes tensors on the device
        self._patches: list = []
        self._modes = (_FunctionMode(self), _DispatchMode(self))

    # ------------------------------------------------------------------------------------------------ tags

    def on_device(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` lives on the stand-in device."""
        with torch._C.DisableTorchFunction():
            storage = tensor.untyped_storage()
        ref = self._storages.get(storage._cdata)
        return ref is not None and not ref.expired()

    def pinned(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor`` is host memory ``pin_memory()`` made (a copy from it to the device may be async)."""
        with torch._C.DisableTorchFunction():
            storage = tensor.untyped_storage()
        ref = self._pinned.get(storage._cdata)
        return ref is not None and not ref.expired()

    def _pin(self, tensor: torch.Tensor) -> torch.Tensor:
        """``pin_memory()`` as the stand-in models it: a host copy marked pinned (a CPU-only torch cannot pin)."""
        with torch._C.DisableTorchFunction():
            copy = tensor.clone()
            storage = copy.untyped_storage()
        self._pinned[storage._cdata] = StorageWeakRef(storage)
        return copy

    def _tag(self, tensor: torch.Tensor, on_device: bool = True) -> None:
        with torch._C.DisableTorchFunction():
            storage = tensor.untyped_storage()
        if on_device:
            self._storages[storage._cdata] = StorageWeakRef(storage)
            if len(self._storages) % 4096 == 0:
                self._storages = {k: r for k, r in self._storages.items() if not r.expired()}
        else:
            self._storages.pop(storage._cdata, None)

    def _tag_all(self, out, on_device: bool = True) -> None:
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._tag(leaf, on_device)

    def is_stand_in(self, device) -> bool:
        """Whether a ``device=`` argument names the stand-in device."""
        if device is None or isinstance(device, int):
            return False
        return torch.device(device).type == self.device.type

    # ------------------------------------------------------------------------------------------------ events

    def _phase(self) -> str:
        if not self._fits or self._fits[-1].iteration == 0:
            return "outside"
        fit = self._fits[-1]
        return "evaluation" if fit.stepped and fit.iteration in fit.points else "step"

    def _to_device(self, source: torch.Tensor, non_blocking: bool, op: str) -> None:
        """A copy of host ``source`` to the device: asynchronous from pinned memory, else a sync (and a
        non-blocking one from pageable memory a violation: it would not be asynchronous on a GPU)."""
        if non_blocking and self.pinned(source):
            return
        if non_blocking:
            self._violation("non-blocking copy from pageable memory", op)
        self._sync("to device", op)

    def _violation(self, kind: str, op: str) -> None:
        self.violations.append(Event(kind, op, self._phase(), _where()))

    def _sync(self, kind: str, op: str) -> None:
        event = Event(kind, op, self._phase(), _where())
        self.syncs.append(event)
        if self.forbid_step_syncs and event.phase == "step" and (kind, event.site) not in self.allow:
            self.violations.append(dataclasses.replace(event, kind=f"step sync ({kind})"))

    # ------------------------------------------------------------------------------------------------ results

    def check(self) -> None:
        """An AssertionError listing every violation (each kind and place once, with its count)."""
        if self.violations:
            counts = collections.Counter(self.violations)
            lines = [f"  {count} x {event}" for event, count in counts.items()]
            raise AssertionError(f"{len(self.violations)} device violation(s):\n" + "\n".join(lines))

    def sync_table(self, phase: str | None = None) -> collections.Counter:
        """(kind, op, where) -> count of the host syncs in ``phase`` (all phases when None)."""
        return collections.Counter((e.kind, e.op, e.where) for e in self.syncs if phase in (None, e.phase))

    def sync_sites(self, phase: str | None = None) -> collections.Counter:
        """(kind, site) -> count of the host syncs in ``phase`` (all phases when None)."""
        return collections.Counter((e.kind, e.site) for e in self.syncs if phase in (None, e.phase))

    def per_step(self) -> float:
        """Host syncs per training iteration (the ``step`` phase's count over the iterations seen)."""
        return sum(e.phase == "step" for e in self.syncs) / max(self.steps, 1)

    def per_evaluation(self) -> float:
        """Host syncs per evaluation iteration (the ``evaluation`` phase's count over the evaluations seen)."""
        return sum(e.phase == "evaluation" for e in self.syncs) / max(self.evaluations, 1)

    def report(self) -> str:
        """Every sync site by phase, with counts: what a log or a failing assertion shows."""
        lines = [f"{self.steps} training iterations, {self.evaluations} evaluation iterations; host syncs "
                 f"{self.per_step():.3f} per step, {self.per_evaluation():.2f} per evaluation"]
        for phase in ("step", "evaluation", "outside"):
            for (kind, op, where), count in sorted(self.sync_table(phase).items(), key=lambda kv: -kv[1]):
                lines.append(f"  {phase:10} {count:5d} x {kind} ({op}) at {where}")
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------------ context

    def __enter__(self) -> "DeviceTracer":
        from masking import rng, training

        seeded = rng.seeded

        def device_seeded(seed, device="cpu"):
            return (DeviceGenerator(self.device).manual_seed(int(seed)) if self.is_stand_in(device)
                    else seeded(seed, device))

        self._patches = [mock.patch.object(rng, "seeded", device_seeded),
                         mock.patch.object(training, "train_loop", self._loop_wrapper(training.train_loop,
                                                                                      training.eval_points))]
        for patch in self._patches:
            patch.start()
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
        for patch in reversed(self._patches):
            patch.stop()

    def _loop_wrapper(self, loop: Callable, eval_points: Callable) -> Callable:
        """``training.train_loop`` that counts its iterations: one starts as the loop calls its trainee's step, and
        its step phase ends when that call returns."""
        signature = inspect.signature(loop)

        @functools.wraps(loop)
        def traced(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            fit = _Fit(set(eval_points(bound["iterations"], bound["eval_every"])))
            trainee = bound["trainee"]

            def step():
                fit.iteration += 1
                fit.stepped = False
                self.steps += 1
                self.evaluations += fit.iteration in fit.points
                try:
                    return trainee.step()
                finally:
                    fit.stepped = True

            bound["trainee"] = dataclasses.replace(trainee, step=step)
            self._fits.append(fit)
            try:
                return loop(**bound)
            finally:
                self._fits.pop()

        return traced


def _where() -> str:
    """The innermost frame outside torch and this file (the line that caused an event) as ``path:line function``,
    the path relative to the repository when inside it."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != __file__ and f"{os.sep}torch{os.sep}" not in name:
            path = Path(name)
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            return f"{shown}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


class _FunctionMode(TorchFunctionMode):
    """The Python API: devices as the code sees them, moves between host and device, generators, conversions."""

    def __init__(self, tracer: DeviceTracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = self.tracer
        if func == DEVICE_GETTER:  # (property getters are new objects at each access: compare, not identity)
            return t.device if t.on_device(args[0]) else torch.device("cpu")
        if func == IS_CUDA_GETTER:
            return t.device.type == "cuda" and t.on_device(args[0])
        if func == IS_CPU_GETTER:
            return not t.on_device(args[0])
        if func is torch.Tensor.get_device:
            return t.device.index if t.on_device(args[0]) else -1
        if func in (torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda):
            return self._move(func, args, kwargs)
        if func is torch.Tensor.pin_memory:
            return t._pin(args[0])
        if func is torch.Tensor.numpy and t.on_device(args[0]):
            t._violation("numpy", "Tensor.numpy")
        if func is torch.Tensor.tolist and t.on_device(args[0]):
            t._sync("to host", "Tensor.tolist")
        if func is torch._C._nn._parse_to:  # Module.to's argument parsing: the device it names stays as it is
            return func(*args, **kwargs)
        generator = kwargs.get("generator")
        stand_in = t.is_stand_in(kwargs.get("device"))
        if stand_in:
            kwargs = {**kwargs, "device": torch.device("cpu")}
            t._creating += 1
        try:
            out = func(*args, **kwargs)
        finally:
            t._creating -= stand_in
        if stand_in:
            t._tag_all(out)
        if isinstance(generator, torch.Generator):
            self._check_generator(func, generator, out if isinstance(out, torch.Tensor) else args[0])
        return out

    def _check_generator(self, func, generator: torch.Generator, drawn) -> None:
        t = self.tracer
        device_generator = isinstance(generator, DeviceGenerator)
        if isinstance(drawn, torch.Tensor) and device_generator != t.on_device(drawn):
            side = "device" if t.on_device(drawn) else "host"
            t._violation("generator", f"{getattr(func, '__name__', func)} drew for the {side} from a "
                                      f"{'device' if device_generator else 'host'} generator")

    def _move(self, func, args, kwargs):
        """``.to``/``.cpu``/``.cuda``: a real copy between host and device (each a sync, as on a GPU), else
        ``func`` itself (dtype changes, no-op moves)."""
        t = self.tracer
        tensor = args[0]
        non_blocking = bool(kwargs.get("non_blocking", False))
        if func is torch.Tensor.cpu:
            target, dtype = torch.device("cpu"), None
        elif func is torch.Tensor.cuda:
            target, dtype = t.device, None
        elif len(args) > 1 and isinstance(args[1], torch.Tensor):  # .to(other)
            target, dtype = (t.device if t.on_device(args[1]) else torch.device("cpu")), args[1].dtype
        else:
            target, dtype, non_blocking, _ = torch._C._nn._parse_to(*args[1:], **kwargs)
        source_on_device = t.on_device(tensor)
        target_on_device = source_on_device if target is None else t.is_stand_in(target)
        if source_on_device == target_on_device:  # a dtype change at most
            copy = func is torch.Tensor.to and bool(kwargs.get("copy", False))
            return tensor if dtype in (None, tensor.dtype) and not copy else tensor.to(dtype=dtype, copy=copy)
        t._moving += 1
        try:
            copy = tensor.to(dtype=dtype or tensor.dtype, copy=True)
        finally:
            t._moving -= 1
        t._tag(copy, target_on_device)
        if target_on_device:
            t._to_device(tensor, non_blocking, "Tensor.to" if func is not torch.Tensor.cuda else "Tensor.cuda")
        else:
            if non_blocking:
                t._violation("non-blocking copy to host", f"Tensor.{func.__name__}")
            t._sync("to host", f"Tensor.{func.__name__}")
        return copy


class _DispatchMode(TorchDispatchMode):
    """Every aten op: mixing, copies between host and device, syncs; device tags for the outputs."""

    def __init__(self, tracer: DeviceTracer):
        super().__init__()
        self.tracer = tracer

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = self.tracer
        with torch._C.DisableTorchFunction():
            stand_in = t.is_stand_in(kwargs.get("device"))
            if stand_in:
                kwargs = {**kwargs, "device": torch.device("cpu")}
            tensors = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
            stand_in = stand_in or bool(t._creating and not tensors)  # a factory function's op for the device
            sides = [t.on_device(x) for x in tensors]
            any_device = any(sides)
            packet = func.overloadpacket
            to_host = packet is aten._to_copy and any_device and not stand_in and kwargs.get("device") is not None \
                and torch.device(kwargs["device"]).type == "cpu"
            t.ops[(str(packet), "device" if (any_device or stand_in) and not to_host else "host")] += 1
            if not t._moving:
                self._inspect(packet, args, kwargs, tensors, sides, to_host)
        out = func(*args, **kwargs)
        with torch._C.DisableTorchFunction():
            if t._moving or packet is aten.copy_:  # the function mode tags its copies; copy_ keeps its destination
                return out
            if to_host:
                t._tag_all(out, False)
            elif any_device or stand_in:
                t._tag_all(out)
        return out

    def _inspect(self, packet, args, kwargs, tensors, sides, to_host: bool) -> None:
        t = self.tracer
        name = str(packet)
        any_device = any(sides)
        if packet in SCALAR:
            if any_device:
                t._sync("item", name)
            return
        if packet is aten.copy_:
            destination, source = t.on_device(args[0]), t.on_device(args[1])
            if destination and not source and args[1].dim() > 0:
                t._to_device(args[1], bool(kwargs.get("non_blocking") or (len(args) > 2 and args[2])), name)
            elif source and not destination:
                if kwargs.get("non_blocking") or (len(args) > 2 and args[2]):
                    t._violation("non-blocking copy to host", name)
                t._sync("to host", name)
            return
        if to_host:
            if kwargs.get("non_blocking"):
                t._violation("non-blocking copy to host", name)
            t._sync("to host", name)
            return
        if not any_device:
            return
        if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_):
            indices = [i for i in (args[1] if len(args) > 1 else []) if isinstance(i, torch.Tensor)]
            if any(i.dtype in (torch.bool, torch.uint8) for i in indices):
                t._sync("data-dependent shape", f"{name} with a boolean mask")
            if any(not t.on_device(i) for i in indices):
                t._sync("to device", f"{name} with host indices")
            hosts = [x for x, side in zip(tensors, sides) if not side and x.dim() > 0 and
                     not any(x is i for i in indices)]
        else:
            hosts = [x for x, side in zip(tensors, sides) if not side and x.dim() > 0]
        if hosts:
            t._violation("mixing", f"{name} with host tensor(s) of shape "
                                   f"{', '.join(str(tuple(x.shape)) for x in hosts)}")
        if packet in DATA_DEPENDENT or (packet is aten.repeat_interleave and kwargs.get("output_size") is None
                                        and len(args) and isinstance(args[0], torch.Tensor)):
            t._sync("data-dependent shape", name)
