"""Step time of masked and Supermask training vs a bare PyTorch loop, side by side in one process.

    python bench/masked_step.py [--steps 300] [--repeats 7] [--threads 2] [--percent-pruned 50]

lenet300_100 on in-memory MNIST-shaped data at batch 60. The baseline is the fastest stock loop: plain
nn.Linear layers, ``Adam(fused=True)``, ``zero_grad(set_to_none=True)``, denormals flushed to zero (all
variants). The masked net (built by masking/ with ``percent-pruned`` of its weights pruned at random, mask-0
'init' so pruned weights are nonzero and frozen) trains with ``masking.training``; so does the learned
Supermask (scores only). The three are timed in interleaved blocks and each block's time is divided by the dense
block run right before it, so drift in machine speed cancels.
Prints the median ratio (goal: masked <= 1.10 x dense) and absolute ms per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F

from masking import models, pruning, training


def bare_lenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def bare_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def masked_lenet(seed: int, percent_pruned: float) -> nn.Module:
    net = models.build("lenet300_100", seed=seed, kind="masked")
    init = net.state_dict()
    names = net.layer_roles()
    fraction = percent_pruned / 100.0
    mask = pruning.prune("random", init, init, pruning.Mask.ones({n: init[n] for n in names}),
                         {n: fraction for n in names}, torch.Generator().manual_seed(seed))
    pruning.apply_ticket(net, init, init, mask, "original", "init", torch.Generator().manual_seed(seed))
    return net


def timed(step, batches) -> float:
    start = time.perf_counter()
    for xb, yb in batches:
        step(xb, yb)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved blocks per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--percent-pruned", type=float, default=50.0)
    args = parser.parse_args()
    training.cpu_settings(args.threads)  # threads and flush-denormal, for every variant alike

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6000, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (6000,), generator=gen)
    order = training.batch_indices(len(x), 60, gen)
    batches = [(x[i], y[i]) for i in (next(order) for _ in range(args.steps))]

    dense = bare_lenet(0)
    dense_opt = torch.optim.Adam(dense.parameters(), lr=1.2e-3, fused=True)
    masked = masked_lenet(0, args.percent_pruned)
    masked_opt = training.make_optimizer(masked, "adam", 1.2e-3)
    superm = models.build("lenet300_100", seed=0, kind="supermask")
    superm_opt = training.make_optimizer(superm, "adam", 0.1)

    variants = {
        "dense": lambda xb, yb: bare_step(dense, dense_opt, xb, yb),
        "masked": lambda xb, yb: training.train_step(masked, masked_opt, xb, yb),
        "supermask": lambda xb, yb: training.train_step(superm, superm_opt, xb, yb),
    }
    for step in variants.values():  # warm-up
        timed(step, batches[:50])
    times = {name: [] for name in variants}
    ratios = {name: [] for name in variants if name != "dense"}
    for _ in range(args.repeats):
        base = timed(variants["dense"], batches)
        times["dense"].append(base)
        for name in ratios:
            t = timed(variants[name], batches)
            times[name].append(t)
            ratios[name].append(t / base)

    kept = 100.0 - args.percent_pruned
    print(f"lenet300_100, batch 60, {args.threads} thread(s), {args.steps} steps x {args.repeats} blocks, "
          f"masked net at {kept:.0f}% weights kept")
    for name, ts in times.items():
        print(f"  {name:10s} {1000 * statistics.median(ts):6.3f} ms/step")
    for name, rs in ratios.items():
        goal = "  (goal <= 1.10)" if name == "masked" else ""
        print(f"  {name} / dense step-time ratio: {statistics.median(rs):.3f}"
              f"  [min {min(rs):.3f}, max {max(rs):.3f}]{goal}")


if __name__ == "__main__":
    main()
