"""Step time of the library's training loop vs a bare PyTorch loop, side by side in one process, and the cost of a
whole lottery round (training + evaluations) per 1,000 steps.

    python bench/masked_step.py [--steps 300] [--repeats 7] [--threads 1] [--percent-pruned 50]

lenet300_100 on in-memory MNIST-shaped data at batch 60. The baseline is the simplest fast loop: plain nn.Linear
layers, ``Adam(fused=True)``, ``zero_grad(set_to_none=True)``, a seeded permutation per epoch indexing the
in-memory tensors, denormals flushed to zero (all variants). The library variants run ``masking.training.fit``
(the loop every procedure uses) on a masked net (``percent-pruned`` of its weights pruned at random, mask-0 'init'
so pruned weights are nonzero and frozen), on the same net with every weight kept (round 0), and on a learned
Supermask (scores only); ``fit`` evaluates only once, at the end, on a 60-example validation set, so the loop
itself is timed. Blocks are interleaved and each block's time is divided by the bare block run right before it,
so drift in machine speed cancels. Prints the median ratio (goal: library masked loop <= 1.10 x bare loop).

Then one lottery round of ``masking.lottery.run_round`` with the default evaluation cadence (validation on 5,000
examples every 100 steps, the test set of 10,000 before training, at the end and at the early-stopping point):
seconds per 1,000 steps, and the share the evaluations take.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from masking import lottery, models, pruning, training
from masking.training import Placed, TrainingConfig


def bare_lenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def bare_loop(model, optimizer, x, y, steps, batch_size, generator) -> None:
    """The baseline: the fewest lines that train ``steps`` steps on shuffled in-memory batches."""
    done = 0
    while done < steps:
        perm = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[start:start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
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
    return net


def mnist_shaped(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def step_ratios(args) -> None:
    x, y = mnist_shaped(6000, 0)
    val = mnist_shaped(60, 1)
    steps = args.steps
    dense = bare_lenet(0)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1.2e-3, fused=True)

    def library(net, lr):
        optimizer = training.make_optimizer(net, "adam", lr)
        return lambda: training.fit(net, optimizer, (x, y), val, steps, 60, steps, torch.Generator().manual_seed(0))

    variants = {
        "bare loop": lambda: bare_loop(dense, dense_opt, x, y, steps, 60, torch.Generator().manual_seed(0)),
        "library, masked": library(masked_lenet(0, args.percent_pruned), 1.2e-3),
        "library, all kept": library(models.build("lenet300_100", seed=0, kind="masked"), 1.2e-3),
        "library, supermask": library(models.build("lenet300_100", seed=0, kind="supermask"), 0.1),
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

    print(f"lenet300_100, batch 60, {args.threads} thread(s), {steps} steps x {args.repeats} interleaved blocks, "
          f"masked net at {100 - args.percent_pruned:.0f}% weights kept")
    for name, ts in times.items():
        print(f"  {name:20s} {1000 * statistics.median(ts) / steps:6.3f} ms/step")
    for name, rs in ratios.items():
        goal = "  (goal <= 1.10)" if name == "library, masked" else ""
        print(f"  {name} / bare loop: {statistics.median(rs):.3f}  [min {min(rs):.3f}, max {max(rs):.3f}]{goal}")


def round_cost(args) -> None:
    data = Placed(mnist_shaped(55_000, 2), mnist_shaped(5_000, 3), mnist_shaped(10_000, 4))
    config = TrainingConfig(iterations=args.round_steps, lr=1.2e-3, eval_every=100)
    setup = lottery.setup(lottery.LotterySpec("lenet300_100", 0, config, rounds=1), data)
    round0 = lottery.run_round(setup, 0, None)
    start = time.perf_counter()
    result = lottery.run_round(setup, 1, round0.checkpoint)
    total = time.perf_counter() - start
    bare = bare_lenet(0)
    optimizer = torch.optim.Adam(bare.parameters(), lr=1.2e-3, fused=True)
    train_only = timed(lambda: bare_loop(bare, optimizer, *data.train, args.round_steps, 60,
                                         torch.Generator().manual_seed(0)))
    per_1k = 1000 / args.round_steps
    print(f"one lottery round (round 1, {result.record.percent_remaining:.0f}% kept), {args.round_steps} steps, "
          f"validation (5,000) every 100 steps, test (10,000) 3 times:")
    print(f"  {total * per_1k:6.2f} s per 1,000 steps, all included ({result.record.train_seconds * per_1k:.2f} s "
          f"in fit); bare training loop alone {train_only * per_1k:.2f} s per 1,000 steps "
          f"(evaluations and the rest: {100 * (1 - train_only / total):.0f}% of the round)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--percent-pruned", type=float, default=50.0)
    parser.add_argument("--round-steps", type=int, default=2000, help="steps of the timed lottery round")
    args = parser.parse_args()
    training.cpu_settings(args.threads)  # threads and flush-denormal, for every variant alike
    step_ratios(args)
    round_cost(args)


if __name__ == "__main__":
    main()
