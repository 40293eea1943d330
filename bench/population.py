"""Population training vs the sequential single-run loop, side by side in one command on the CPU.

    python bench/population.py [--sizes 1,8,27,55] [--member-steps 600] [--repeats 5] [--arch lenet300_100]
    python bench/population.py --device cuda --sizes 8,27,55 [--arch conv6]     # on a GPU: vs one net alone

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

Every step draws each member's batch from its own generator (``training.batch_indices``) and gathers it, as
training does. Denormals are flushed to zero everywhere. Variants run in interleaved blocks, each repeat starting
with the reference; a block's time is the slower worker's. Printed: median wall ms per member-step, CPU ms per
member-step (what one member-step costs a core, less sensitive to other work on the machine) and the throughput
ratio to ``single`` of the same repeat (median, min, max). Other work on the machine shows as spread.
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
    """Builds one variant's nets once; ``run(steps)`` times ``steps`` lockstep steps (wall and CPU seconds)."""

    def __init__(self, method: str, size: int, arch: str, data, first_seed: int, device=None):
        from masking import population, training

        self.data, self.size, self.device = data, size, torch.device(device or "cpu")
        x, _ = data
        seeds = range(first_seed, first_seed + size)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        # batches as training.fit (each net alone) and population.fit (the members together) draw them
        self.orders = [training.batch_indices(len(x), 60, g, x.device) for g in generators]
        self.batches = population.member_batches(len(x), 60, generators, x.device)
        shape = tuple(x.shape[1:])
        if method == "single":
            self.nets = [_ticket(arch, s, "masked", shape)[0].to(self.device) for s in seeds]
            self.opts = [training.make_optimizer(n, "adam", 1.2e-3) for n in self.nets]
            self.step = self._single
        elif method in ("stack", "autograd"):
            stack = population.Stack([_ticket(arch, s, "masked", shape)[0].to(self.device) for s in seeds])
            opt = population.make_optimizer(stack, "adam", 1.2e-3)
            autograd = True if method == "autograd" else None
            self.step = lambda xb, yb: population.train_step(stack, opt, xb, yb, autograd=autograd)
        elif method == "floor":
            net = _ticket(arch, first_seed, "masked", shape)[0]
            self.step = self._floor_step([fc.weight.detach().t().contiguous() for fc in net.fcs])
        elif method == "vmap":
            self.step = self._vmap_step([(net.to(self.device), {k: m.to(self.device) for k, m in mask.items()})
                                         for net, mask in (_ticket(arch, s, "dense", shape) for s in seeds)])
        else:
            raise ValueError(method)
        self.method = method

    def _single(self, steps: int) -> None:
        from masking import training

        x, y = self.data
        for net, opt, order in zip(self.nets, self.opts, self.orders):  # one run after another
            for _ in range(steps):
                idx = next(order)  # the batch as training.fit gathers it
                training.train_step(net, opt, x.index_select(0, idx), y.index_select(0, idx))

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
        def step(xb, yb):
            for p, x, g in zip(params, inputs, out_grads):
                torch.mm(x, p, out=g)  # forward (the output's values are not used)
                torch.mm(x.t(), g, out=p.grad)  # weight gradient
            for p, x, g in zip(params[1:], inputs[1:], out_grads[1:]):
                torch.mm(g, p.t(), out=x)  # input gradient (none for the first layer)
            opt.step()

        return step

    @staticmethod
    def _vmap_step(pairs):
        from torch.func import functional_call, stack_module_state, vmap

        nets = [net for net, _ in pairs]
        params, buffers = stack_module_state(nets)
        keep = {f"{name}": torch.stack([m[name] for _, m in pairs]).float() for name in pairs[0][1]}
        base = copy.deepcopy(nets[0]).to("meta")

        def loss(p, b, x, y):
            return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

        batched = vmap(loss)
        opt = torch.optim.Adam(list(params.values()), lr=1.2e-3, fused=True)

        def step(xb, yb):
            opt.zero_grad(set_to_none=True)
            batched(params, buffers, xb, yb).sum().backward()
            for name, k in keep.items():
                params[name].grad.mul_(k)
            opt.step()

        return step

    def run(self, steps: int) -> tuple[float, float]:
        x, y = self.data
        self._sync()
        start, cpu = time.perf_counter(), time.process_time()
        if self.method == "single":
            self._single(steps)
        elif self.method == "floor":
            for _ in range(steps):
                self.step(None, None)
        else:
            from masking.population import gather

            for _ in range(steps):
                self.step(*gather(x, y, next(self.batches)))  # as population.fit gathers
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
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.device:
        from masking.training import resolve_device

        try:
            args.device = resolve_device(args.device)
        except ValueError as error:  # one line, before anything is built
            parser.error(str(error).replace("training.device", "--device"))
        return on_device(args, sizes)

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


def on_device(args, sizes: list[int]) -> None:
    """Every variant in this process on ``args.device``: one net alone (``single``) against populations of K on
    the same device (the GPU comparison: time per member-step, and the throughput ratio)."""
    from masking.training import device_settings

    device = args.device
    device_settings(device)  # what a run on that device sets (CUDA: deterministic algorithms), for every variant
    torch.set_flush_denormal(True)
    gen = torch.Generator().manual_seed(0)
    shape = (1, 28, 28) if args.arch == "lenet300_100" else (3, 32, 32)
    data = (torch.rand(6000, *shape, generator=gen).to(device),
            torch.randint(0, 10, (6000,), generator=gen).to(device))
    plan = [("single (one net alone)", "single", 1, args.member_steps)]
    for k in sizes:
        plan.append((f"stack {k}", "stack", k, max(3, args.member_steps // k)))
        if not args.no_vmap:
            plan.append((f"vmap {k}", "vmap", k, max(3, args.member_steps // k)))
    variants = {}
    for label, method, size, steps in plan:
        variants[label] = Variant(method, size, args.arch, data, first_seed=0, device=device)
        variants[label].run(max(2, steps // 10))  # warm-up (CUDA kernels, caches)
    times: dict[str, list[float]] = {label: [] for label, *_ in plan}
    for rep in range(args.repeats):
        for label, method, size, steps in plan:
            wall, _ = variants[label].run(steps)
            times[label].append(wall / (size * steps))
        print(f"repeat {rep + 1}/{args.repeats} done", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{args.arch} on {device} ({name}), batch 60, 50% pruned, {args.repeats} interleaved repeats; wall time "
          "per member-step and throughput vs one net alone (median [min, max])")
    for label, ts in times.items():
        line = f"  {label:24s} {1000 * statistics.median(ts):8.4f} ms/member-step"
        if label != plan[0][0]:
            ratios = [single / t for single, t in zip(times[plan[0][0]], ts)]
            line += f"   {statistics.median(ratios):6.2f}x  [min {min(ratios):.2f}, max {max(ratios):.2f}]"
        print(line)


if __name__ == "__main__":
    main()
