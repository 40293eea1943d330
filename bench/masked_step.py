"""Step time of the library's training loop vs a bare PyTorch loop, side by side in one process, and the cost of a
whole lottery round (training + evaluations) per 1,000 steps.

    python bench/masked_step.py [--steps 300] [--repeats 7] [--threads 1] [--percent-pruned 50] [--device cpu]
    python bench/masked_step.py --device cuda --archs lenet300_100,conv6      # on a GPU machine

lenet300_100 on in-memory MNIST-shaped data at batch 60. The baseline is the simplest fast loop: plain nn.Linear
layers, ``Adam(fused=True)``, ``zero_grad(set_to_none=True)``, a seeded permutation per epoch indexing the
in-memory tensors, denormals flushed to zero (all variants). The library variants run ``masking.training.fit``
(the loop every procedure uses) on a masked net (``percent-pruned`` of its weights pruned at random, mask-0 'init'
so pruned weights are nonzero and frozen), on the same net with every weight kept (round 0), and on a learned
Supermask (scores only), each with the progress status line a terminal run draws (into a buffer);
``fit`` evaluates only once, at the end, on a 60-example validation set, so the loop
itself is timed. Blocks are interleaved and each block's time is divided by the bare block run right before it,
so drift in machine speed cancels. Prints the median ratio (goal: library masked loop <= 1.10 x bare loop).

Then one lottery round of ``masking.lottery.run_round`` with the default evaluation cadence (validation on 5,000
examples every 100 steps, the test set of 10,000 before training, at the end and at the early-stopping point):
seconds per 1,000 steps, and the share the evaluations take; with ``--archs``, that round for each net (conv nets
on CIFAR-shaped data, 45,000/5,000/10,000). From LeNet-300-100's round cost it projects the wall time of the
paper's FC criteria study (11 criteria x 5 seeds x 25 rounds x 50,000 steps) run one run at a time on this device.

``--device`` (cpu, cuda, cuda:N; default cpu) puts data, nets and optimizer state there; CUDA timings synchronize
the device before reading the clock.
"""

from __future__ import annotations

import io
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from experiments.progress import Progress
from masking import lottery, models, pruning, training
from masking.training import Placed, TrainingConfig
from ticketlab.cli import Parser


def bare_lenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def bare_loop(model, optimizer, x, y, steps, batch_size, generator) -> None:
    """The baseline: the fewest lines that train ``steps`` steps on shuffled in-memory batches."""
    done = 0
    while done < steps:
        perm = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx)).backward()
            optimizer.step()
            done += 1
            if done == steps:
                return


def masked_lenet(seed: int, percent_pruned: float) -> nn.Module:
    net = models.build("lenet300_100", seed=seed, kind="masked")
    init = net.state_dict()
    names = net.layer_roles()
    fraction = percent_pruned / 100.0
    mask = pruning.prune("random", init, init, pruning.Mask.ones({n: init[n] for n in names}),
                         {n: fraction for n in names}, torch.Generator().manual_seed(seed))
    pruning.apply_ticket(net, init, init, mask, "original", "init", torch.Generator().manual_seed(seed))
    return net.to(DEVICE)


def mnist_shaped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return shaped(n, seed, (1, 28, 28))


DEVICE = torch.device("cpu")
STUDY_RUNS, STUDY_ROUNDS, STUDY_STEPS = 11 * 5, 25, 50_000  # the paper's FC criteria study


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def shaped(n: int, seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=gen).to(DEVICE), torch.randint(0, 10, (n,), generator=gen).to(DEVICE)


def step_ratios(args) -> None:
    x, y = mnist_shaped(6000, 0)
    val = mnist_shaped(60, 1)
    steps = args.steps
    dense = bare_lenet(0).to(DEVICE)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1.2e-3, fused=True)

    def library(net, lr):
        optimizer = training.make_optimizer(net, "adam", lr)
        progress = Progress(steps, stream=io.StringIO(), enabled=True)  # the status line a terminal run draws
        return lambda: training.fit(net, optimizer, (x, y), val, steps, 60, steps, torch.Generator().manual_seed(0),
                                    on_progress=lambda it: progress.update(0, it))

    variants = {
        "bare loop": lambda: bare_loop(dense, dense_opt, x, y, steps, 60, torch.Generator().manual_seed(0)),
        "library, masked": library(masked_lenet(0, args.percent_pruned), 1.2e-3),
        "library, all kept": library(models.build("lenet300_100", seed=0, kind="masked").to(DEVICE), 1.2e-3),
        "library, supermask": library(models.build("lenet300_100", seed=0, kind="supermask").to(DEVICE), 0.1),
    }
    for run in variants.values():  # warm-up
        run()
    times = {name: [] for name in variants}
    ratios = {name: [] for name in variants if name != "bare loop"}
    for _ in range(args.repeats):
        base = timed(variants["bare loop"])
        times["bare loop"].append(base)
        for name in ratios:
            t = timed(variants[name])
            times[name].append(t)
            ratios[name].append(t / base)

    print(f"lenet300_100 on {DEVICE}, batch 60, {args.threads} thread(s), {steps} steps x {args.repeats} "
          f"interleaved blocks, masked net at {100 - args.percent_pruned:.0f}% weights kept")
    for name, ts in times.items():
        print(f"  {name:20s} {1000 * statistics.median(ts) / steps:6.3f} ms/step")
    for name, rs in ratios.items():
        goal = "  (goal <= 1.10)" if name == "library, masked" else ""
        print(f"  {name} / bare loop: {statistics.median(rs):.3f}  [min {min(rs):.3f}, max {max(rs):.3f}]{goal}")


def round_cost(args, arch: str) -> float:
    """Seconds per 1,000 steps of one lottery round of ``arch`` (round 1, evaluations included); printed."""
    shape = models.spec(arch).input_shape
    train_size = 55_000 if arch == "lenet300_100" else 45_000
    data = Placed(shaped(train_size, 2, shape), shaped(5_000, 3, shape), shaped(10_000, 4, shape))
    config = TrainingConfig(iterations=args.round_steps, lr=models.spec(arch).lr, eval_every=100)
    setup = lottery.setup(lottery.LotterySpec(arch, 0, config, rounds=1), data, DEVICE)
    round0 = lottery.run_round(setup, 0, None)
    sync()
    start = time.perf_counter()
    result = lottery.run_round(setup, 1, round0.checkpoint)
    sync()
    total = time.perf_counter() - start
    per_1k = 1000 / args.round_steps
    print(f"{arch} on {DEVICE}: one lottery round (round 1, {result.record.percent_remaining:.0f}% kept), "
          f"{args.round_steps} steps, validation (5,000) every 100 steps, test (10,000) 3 times:")
    line = (f"  {total * per_1k:6.2f} s per 1,000 steps, all included "
            f"({result.record.train_seconds * per_1k:.2f} s in fit)")
    if arch == "lenet300_100":
        bare = bare_lenet(0).to(DEVICE)
        optimizer = torch.optim.Adam(bare.parameters(), lr=1.2e-3, fused=True)
        train_only = timed(lambda: bare_loop(bare, optimizer, *data.train, args.round_steps, 60,
                                             torch.Generator().manual_seed(0)))
        line += (f"; bare training loop alone {train_only * per_1k:.2f} s per 1,000 steps (evaluations and the "
                 f"rest: {100 * (1 - train_only / total):.0f}% of the round)")
    print(line)
    return total * per_1k / 1000


def project_study(seconds_per_step: float) -> None:
    steps = STUDY_RUNS * STUDY_ROUNDS * STUDY_STEPS
    hours = seconds_per_step * steps / 3600
    print(f"projected: the paper's FC criteria study (11 criteria x 5 seeds x {STUDY_ROUNDS} rounds x "
          f"{STUDY_STEPS:,} steps = {steps:,} steps) at {1000 * seconds_per_step:.2f} ms/step, one run at a time "
          f"on {DEVICE}: {hours:,.0f} h ({hours / 24:.1f} days); n runs in parallel divide it by up to n "
          f"(not measured)")


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--percent-pruned", type=float, default=50.0)
    parser.add_argument("--round-steps", type=int, default=2000, help="steps of the timed lottery round")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    parser.add_argument("--archs", default="lenet300_100",
                        help="comma-separated nets whose full round is timed (e.g. lenet300_100,conv6)")
    args = parser.parse_args()
    global DEVICE
    try:
        DEVICE = training.resolve_device(args.device)  # before CUDA initializes: the deterministic cuBLAS setting
    except ValueError as error:
        parser.error(str(error).replace("training.device", "--device"))
    training.cpu_settings(args.threads)  # threads and flush-denormal, for every variant alike
    training.device_settings(DEVICE)
    if DEVICE.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(DEVICE)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    step_ratios(args)
    per_step = {arch: round_cost(args, arch) for arch in args.archs.split(",")}
    if "lenet300_100" in per_step:
        project_study(per_step["lenet300_100"])


if __name__ == "__main__":
    main()
