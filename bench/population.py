"""Population training vs the sequential single-run loop, side by side in one command on the CPU.

    python bench/population.py [--sizes 1,8,27,55] [--member-steps 600] [--repeats 5] [--arch lenet300_100]
    python bench/population.py --device cuda --sizes 1,8,27,55,110,220 [--arch conv6] [--variants eager,graphs]

Time per member-step (one step of one net) of masked LeNet-300-100 training at batch 60, on MNIST-shaped data in
memory, 50% of each net's weights pruned at random (mask-0 'init': pruned weights frozen at nonzero values):

* ``single``: the sweep's default, 2 worker processes with 1 thread each, each training single runs one after
  another with ``masking.training`` (MaskedLinear, fused Adam); the reference.
* ``single, 1 proc x 2 threads``: the same runs one after another in one process with 2 threads (torch's default
  thread count), for comparison with measurements made against that loop.
* ``stack K``: 2 worker processes with 1 thread each, each training a population of K members in lockstep with
  ``masking.population`` (hand-written batched layers: ``baddbmm``, grouped conv; a fully connected stack's
  gradients computed by hand, ``population.fc_gradients``).
* ``stack K, autograd``: the same with autograd's backward (fully connected nets only).
* ``vmap K``: the same with torch's model-ensembling API (``torch.func.stack_module_state`` + ``functional_call``
  + ``vmap``) over plain nets, gradients masked the same way, one fused Adam over the stack.
* ``stack K, 1 proc x 2 threads``: one process with 2 threads training one population of 2K members.
* ``floor``: the unavoidable work, per process: one net's matrix products of a step (forward, weight and input
  gradients, ``torch.mm`` on the same shapes) and its fused Adam step, nothing else (no gather, loss, masking or
  Python around them). Its ratio to ``single`` bounds what batching dense products could gain on this machine (fully
  connected nets only).

Every step is the library's (``training.net_trainee``, ``population.stack_trainee``: each member's batch from its
own generator's order, ``training.BatchOrder``, gathered on the device, the losses summed there), as training runs
it. Denormals are flushed to zero everywhere. Variants run in interleaved blocks, each repeat starting with the
reference; a block's time is the slower worker's. Printed: median wall ms per member-step, CPU ms per member-step
(what one member-step costs a core, less sensitive to other work on the machine) and the throughput ratio to
``single`` of the same repeat (median, min, max). Other work on the machine shows as spread.

On a device (``--device cuda``), every variant in one process: one net alone against populations of each K, each
step eager and (``--variants``) as a CUDA graph (``graphs``: ``training.GraphedStep``) or compiled
(``compile``: ``torch.compile(mode="reduce-overhead")`` of the same device step, measured apart: after its own
warm-up it reports whether its numbers equal the eager step's, bit for bit, after the timed steps). Each block runs
about ``--block-seconds``; printed per variant: ms per member-step (median over repeats) and the throughput ratio to
one net alone, eager (``x alone``) and as a graph (``x alone+graphs``).
"""

from __future__ import annotations

import copy
import functools
import multiprocessing as mp
import statistics
import time

import torch
from torch.nn import functional as F

from ticketlab.cli import Parser


def _ticket(arch: str, seed: int, kind: str, input_shape):
    """A copy of the 50%-pruned net of ``seed`` (and its mask): built once per process, since the variants share
    seeds (building and pruning 91 Conv6 nets took most of a GPU run's minute)."""
    return copy.deepcopy(_built_ticket(arch, seed, kind, tuple(input_shape)))


@functools.lru_cache(maxsize=None)
def _built_ticket(arch: str, seed: int, kind: str, input_shape):
    from masking import models, pruning

    net = models.build(arch, seed=seed, kind="masked", input_shape=input_shape)
    init = net.state_dict()
    names = net.layer_roles()
    mask = pruning.prune("random", init, init, pruning.Mask.ones({n: init[n] for n in names}),
                         {n: 0.5 for n in names}, torch.Generator().manual_seed(seed))
    pruning.apply_ticket(net, init, init, mask, "original", "init", torch.Generator().manual_seed(seed))
    if kind == "masked":
        return net, mask
    dense = models.build(arch, seed=seed, kind="dense", input_shape=input_shape)
    dense.load_state_dict({k: v for k, v in net.state_dict().items() if k.endswith((".weight", ".bias"))})
    return dense, mask


class Variant:
    """Builds one variant's nets once; ``run(steps)`` times ``steps`` lockstep steps (wall and CPU seconds).
    ``mode``: eager, graphs (the step a CUDA graph) or compile (``torch.compile`` of the step; ``compile_backend``)."""

    def __init__(self, method: str, size: int, arch: str, data, first_seed: int, device=None, mode: str = "eager",
                 compile_backend: str = "inductor"):
        from masking import population, training

        self.data, self.size, self.device = data, size, torch.device(device or "cpu")
        x, y = data
        seeds = range(first_seed, first_seed + size)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        shape = tuple(x.shape[1:])
        graphs = mode == "graphs"
        self.trainees, self.stack = [], None
        if method == "single":  # each net alone, one run after another: what training.fit trains
            for seed, generator in zip(seeds, generators):
                net = _ticket(arch, seed, "masked", shape)[0].to(self.device)
                optimizer = training.make_optimizer(net, "adam", 1.2e-3, graphs)
                self.trainees.append(training.net_trainee(net, optimizer, data, data, 60, generator, graphs))
        elif method in ("stack", "autograd"):
            self.stack = stack = population.Stack([_ticket(arch, s, "masked", shape)[0].to(self.device)
                                                   for s in seeds])
            opt = population.make_optimizer(stack, "adam", 1.2e-3, graphs)
            if method == "stack" and mode != "compile":
                self.trainees.append(population.stack_trainee(stack, opt, data, data, 60, generators, graphs))
            else:  # autograd's backward for a fully connected stack, or the stack's step compiled
                autograd = True if method == "autograd" else None
                self.trainees.append(self._trainee(training.BatchOrder(len(x), 60, generators, x.device), lambda idx:
                                     population.train_step(stack, opt, *population.gather(x, y, idx), autograd),
                                     mode, compile_backend))
        elif method == "floor":
            net = _ticket(arch, first_seed, "masked", shape)[0]
            self.step = self._floor_step([fc.weight.detach().t().contiguous() for fc in net.fcs])
        elif method == "vmap":
            self.order = training.BatchOrder(len(x), 60, generators, x.device)
            self.step = self._vmap_step([(net.to(self.device), {k: m.to(self.device) for k, m in mask.items()})
                                         for net, mask in (_ticket(arch, s, "dense", shape) for s in seeds)])
        else:
            raise ValueError(method)
        self.method = method

    def _trainee(self, order, work, mode: str, backend: str):
        """A trainee of ``work`` (``training.make_trainee``'s device step), compiled with ``mode == "compile"``."""
        from masking import training

        trainee = training.make_trainee(order, work, lambda: None, lambda members: None, lambda k: {},
                                        self.data[0].dtype)
        if mode != "compile":
            return trainee
        losses = trainee.losses

        def device_step() -> None:  # make_trainee's own device part, as torch.compile sees it
            losses.add_(work(order.indices()))

        compiled = torch.compile(device_step, mode="reduce-overhead" if backend == "inductor" else None,
                                 backend=backend)

        def step() -> None:
            order.advance()
            compiled()

        trainee.step = step
        return trainee

    @staticmethod
    def _floor_step(weights):
        """The unavoidable work of one member-step: the products of a fully connected step at batch 60 and one
        fused Adam step over the weights, on fixed inputs and output gradients."""
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(w) for w in weights]
        inputs = [torch.rand(60, w.shape[0], generator=gen) for w in weights]
        out_grads = [torch.rand(60, w.shape[1], generator=gen) for w in weights]
        for p in params:
            p.grad = torch.zeros_like(p)
        opt = torch.optim.Adam(params, lr=1.2e-3, fused=True)

        @torch.no_grad()
        def step():
            for p, x, g in zip(params, inputs, out_grads):
                torch.mm(x, p, out=g)  # forward (the output's values are not used)
                torch.mm(x.t(), g, out=p.grad)  # weight gradient
            for p, x, g in zip(params[1:], inputs[1:], out_grads[1:]):
                torch.mm(g, p.t(), out=x)  # input gradient (none for the first layer)
            opt.step()

        return step

    def _vmap_step(self, pairs):
        from torch.func import functional_call, stack_module_state, vmap

        from masking.population import gather

        nets = [net for net, _ in pairs]
        params, buffers = stack_module_state(nets)
        keep = {f"{name}": torch.stack([m[name] for _, m in pairs]).float() for name in pairs[0][1]}
        base = copy.deepcopy(nets[0]).to("meta")

        def loss(p, b, x, y):
            return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

        batched = vmap(loss)
        opt = torch.optim.Adam(list(params.values()), lr=1.2e-3, fused=True)

        def step():
            self.order.advance()
            xb, yb = gather(*self.data, self.order.indices())  # as population.fit gathers
            opt.zero_grad(set_to_none=True)
            batched(params, buffers, xb, yb).sum().backward()
            for name, k in keep.items():
                params[name].grad.mul_(k)
            opt.step()

        return step

    def run(self, steps: int) -> tuple[float, float]:
        self._sync()
        start, cpu = time.perf_counter(), time.process_time()
        for trainee in self.trainees:  # several: single runs one after another
            for _ in range(steps):
                trainee.step()
        if not self.trainees:
            for _ in range(steps):
                self.step()
        self._sync()
        return time.perf_counter() - start, time.process_time() - cpu

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def worker(conn, barrier, arch: str, worker_index: int) -> None:
    torch.set_flush_denormal(True)
    variants: dict = {}
    gen = torch.Generator().manual_seed(0)
    shape = (1, 28, 28) if arch == "lenet300_100" else (3, 32, 32)
    data = (torch.rand(6000, *shape, generator=gen), torch.randint(0, 10, (6000,), generator=gen))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        method, size, threads, steps = msg
        torch.set_num_threads(threads)
        key = (method, size)
        if key not in variants:
            variants[key] = Variant(method, size, arch, data, first_seed=1000 * worker_index)
            variants[key].run(max(2, steps // 10))  # warm-up
        barrier.wait()
        conn.send(variants[key].run(steps))


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,8,27,55", help="population sizes K (members per process)")
    parser.add_argument("--member-steps", type=int, default=600, help="member-steps per worker per block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", default="lenet300_100")
    parser.add_argument("--no-vmap", action="store_true", help="leave out the torch.func variant")
    parser.add_argument("--device", default=None,
                        help="run every variant in this process on this device (e.g. cuda): one net alone vs "
                             "populations on the same device; default: the CPU comparison with 2 worker processes")
    parser.add_argument("--variants", default="eager,graphs",
                        help="with --device: how each step runs: eager, graphs (CUDA only), compile (torch.compile)")
    parser.add_argument("--block-seconds", type=float, default=0.3, help="with --device: seconds per timed block")
    parser.add_argument("--train", type=int, default=None,
                        help="with --device: training examples (default MNIST's 55,000, CIFAR's 45,000)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="with --variants compile: torch.compile's backend (inductor: mode reduce-overhead)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.device:
        from masking.training import resolve_device

        try:
            args.device = resolve_device(args.device)
        except ValueError as error:  # one line, before anything is built
            parser.error(str(error).replace("training.device", "--device"))
        modes = args.variants.split(",")
        if not modes or any(mode not in MODES for mode in modes):
            parser.error(f"--variants {args.variants!r}: valid choices: {', '.join(MODES)} (comma-separated)")
        return on_device(args, sizes, modes)

    ctx = mp.get_context("spawn")
    barrier2, barrier1 = ctx.Barrier(2), ctx.Barrier(1)
    pipes, procs = [], []
    for i in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(child, barrier2, args.arch, i), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)
    solo_parent, solo_child = ctx.Pipe()
    solo = ctx.Process(target=worker, args=(solo_child, barrier1, args.arch, 2), daemon=True)
    solo.start()

    # (label, method, members per process, processes, threads, steps per block)
    single_steps = max(1, args.member_steps // 4)  # each worker trains 4 single runs one after another
    plan = [("single", "single", 4, 2, 1, single_steps)]
    plan.append(("single, 1 proc x 2 threads", "single", 4, 1, 2, single_steps))  # torch's default threads
    if args.arch.startswith("lenet"):
        plan.append(("floor (products + Adam only)", "floor", 1, 2, 1, args.member_steps))
    for k in sizes:
        plan.append((f"stack {k}", "stack", k, 2, 1, max(3, args.member_steps // k)))
        if args.arch.startswith("lenet"):  # fully connected: train_step's hand-written gradients vs autograd
            plan.append((f"stack {k}, autograd", "autograd", k, 2, 1, max(3, args.member_steps // k)))
        if not args.no_vmap:
            plan.append((f"vmap {k}", "vmap", k, 2, 1, max(3, args.member_steps // k)))
    big = 2 * max(sizes)
    plan.append((f"stack {big}, 1 proc x 2 threads", "stack", big, 1, 2, max(3, 2 * args.member_steps // big)))

    times = {label: [] for label, *_ in plan}
    cpu_times = {label: [] for label, *_ in plan}
    ratios = {label: [] for label, *_ in plan[1:]}
    try:
        for rep in range(args.repeats):
            for label, method, size, nproc, threads, steps in plan:
                targets = pipes if nproc == 2 else [solo_parent]
                for conn in targets:
                    conn.send((method, size, threads, steps))
                answers = [conn.recv() for conn in targets]
                seconds = max(wall for wall, _ in answers)  # the slower process
                per_member_step = seconds / (size * steps)  # every process did size*steps member-steps
                per_member_step /= nproc  # nproc processes side by side
                times[label].append(per_member_step)
                cpu_times[label].append(sum(cpu for _, cpu in answers) / (nproc * size * steps))
                if label != "single":
                    ratios[label].append(times["single"][-1] / per_member_step)
            print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    finally:
        for conn in [*pipes, solo_parent]:
            conn.send(None)
        for proc in [*procs, solo]:
            proc.join(10)

    print(f"{args.arch}, batch 60, 50% pruned, {args.repeats} interleaved repeats; wall time per member-step (all "
          "processes together), CPU time per member-step, and throughput vs 'single' (wall; median [min, max])")
    for label, ts in times.items():
        line = (f"  {label:32s} {1000 * statistics.median(ts):7.3f} ms/member-step wall "
                f"{1000 * statistics.median(cpu_times[label]):7.3f} ms cpu")
        if label in ratios:
            rs = ratios[label]
            line += f"   {statistics.median(rs):5.2f}x  [min {min(rs):.2f}, max {max(rs):.2f}]"
        print(line)


MODES = ("eager", "graphs", "compile")


def on_device(args, sizes: list[int], modes: list[str]) -> None:
    """Every variant in this process on ``args.device``: one net alone against populations of K on the same
    device, each step run as ``modes`` say (the GPU comparison: time per member-step, and the throughput ratios)."""
    from masking.training import GraphedStep, device_settings

    device = args.device
    device_settings(device)  # what a run on that device sets (CUDA: deterministic algorithms), for every variant
    torch.set_flush_denormal(True)
    if device.type != "cuda" and "graphs" in modes:
        print("graphs: CUDA graphs need a CUDA device; left out on", device)
        modes = [mode for mode in modes if mode != "graphs"]
    lenet = args.arch == "lenet300_100"
    gen = torch.Generator().manual_seed(0)
    shape = (1, 28, 28) if lenet else (3, 32, 32)
    examples = args.train or (55_000 if lenet else 45_000)
    data = (torch.rand(examples, *shape, generator=gen).to(device),
            torch.randint(0, 10, (examples,), generator=gen).to(device))
    plan = [(f"alone, {mode}", "single", 1, mode) for mode in modes if mode != "compile"]
    plan += [(f"K={k}, {mode}", "stack", k, mode) for k in sizes for mode in modes]
    variants, steps = {}, {}
    for label, method, size, mode in plan:
        try:
            variant = Variant(method, size, args.arch, data, first_seed=0, device=device, mode=mode,
                              compile_backend=args.compile_backend)
            variant.run(GraphedStep.WARMUP + 2)  # warm-up: CUDA kernels, caches, the graph's capture, compilation
            per_step = variant.run(3)[0] / 3
        except Exception as error:  # noqa: BLE001  (a compiler missing offline, a capture refused: the rest goes on)
            if mode == "eager":
                raise
            print(f"  {label}: failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}", flush=True)
            continue
        variants[label] = variant
        steps[label] = max(3, min(5000, round(args.block_seconds / max(per_step, 1e-6))))
    times: dict[str, list[float]] = {label: [] for label in variants}
    for rep in range(args.repeats):
        for label, variant in variants.items():
            wall, _ = variant.run(steps[label])
            times[label].append(wall / (variant.size * steps[label]))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{args.arch} on {device} ({name}), torch {torch.__version__}, batch 60, 50% pruned, {examples:,} "
          f"examples, {args.repeats} interleaved repeats of about {args.block_seconds} s; ms per member-step (median) "
          "and throughput vs one net alone, eager (x alone) and as a CUDA graph (x alone+graphs)")
    print(f"  {'variant':18s} {'ms/member-step':>14s} {'x alone':>9s} {'x alone+graphs':>15s}")
    median = {label: statistics.median(ts) for label, ts in times.items()}
    for label, ms in median.items():
        ratios = [f"{median[base] / ms:9.2f}" if base in median else f"{'-':>9s}"
                  for base in ("alone, eager", "alone, graphs")]
        print(f"  {label:18s} {1000 * ms:14.4f} {ratios[0]} {ratios[1]:>15s}")
    key = 55 if 55 in sizes else max(sizes)  # the goal is stated for K = 55
    for mode in modes:
        if mode != "eager":
            print(exactness(args, data, mode, key))
    parts = [f"alone {mode} {1000 * median[f'alone, {mode}']:.4f}" for mode in modes if f"alone, {mode}" in median]
    for mode in modes:
        ms = median.get(f"K={key}, {mode}")
        if ms is not None:
            ratios = [f"{median[base] / ms:.1f}x vs {base}" for base in ("alone, eager", "alone, graphs")
                      if base in median]
            parts.append(f"K={key} {mode} {1000 * ms:.4f} ({', '.join(ratios)})")
    print(f"summary: {args.arch} ms/member-step: {'; '.join(parts)}")


def exactness(args, data, mode: str, size: int, steps: int = 20) -> str:
    """Whether a population of ``size`` trained ``steps`` steps with its step run as ``mode`` ends with the eager
    step's weights, bit for bit (a line saying so, or by how much they differ)."""
    try:
        stacks = []
        for run_as in ("eager", mode):
            variant = Variant("stack", size, args.arch, data, first_seed=0, device=args.device, mode=run_as,
                              compile_backend=args.compile_backend)
            variant.run(steps)
            stacks.append(variant.stack)
        pairs = [(a.detach(), b.detach()) for a, b in zip(stacks[0].parameters(), stacks[1].parameters())]
        diffs = [float((a - b).abs().max()) for a, b in pairs]
    except Exception as error:  # noqa: BLE001
        return f"exact: {mode} K={size}: failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    same = all(torch.equal(a, b) for a, b in pairs)
    verdict = "bit-identical to the eager step" if same else f"differs from the eager one (max |diff| {max(diffs):.3g})"
    return f"exact: {mode} K={size}: after {steps} steps, {verdict}"


if __name__ == "__main__":
    main()
