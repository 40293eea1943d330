"""``sweep --population auto``: the population size K for a grid on this machine's GPU, from the device's memory and
the measured step time.

On a GPU, ``choose`` builds populations of the grid's net (its arch, input shape, batch size, dtype, lottery or
Supermask) on synthetic data and measures, with the step as the runs will take it (``training.graphs``):

* memory: the peak memory of a population of 2 and of 8 members through a few steps and an evaluation; the
  difference is what one more member costs, the rest a population's fixed part. K may go up to what the device's
  free memory (80% of it, shared by the populations that run on it at once, less the data set each one places
  there) holds;
* time: the time per step of populations of 1, 2, 4, ... members up to that bound and to the grid's size (and of
  the grid's size itself).

K is the size whose projected wall time for the grid is least: populations of K, ``slots`` at a time on the device,
one after another, each step as measured (``pick``). Without a GPU, K is 1 (single runs: on a CPU a population
trains at about the speed of single runs). The choice is printed in one line with what it rests on.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch

from experiments import datasets
from masking import models, population, rng, supermask, training
from ticketlab import kinds

MEMORY_SHARE = 0.8  # of the device's free memory, for the populations running on it (the rest: CUDA, fragments)
PROBE_SIZES = (2, 8)  # populations whose peak memory gives the cost of one member
TIMED_STEPS = 10  # timed steps per size, after the warm-up (the graph's capture)
EXAMPLES = {"cifar10": 60_000}  # examples a data set places on the device (default: MNIST's 70,000)


def pick(points: int, slots: int, step_seconds: dict[int, float], most: int) -> int:
    """The K (a key of ``step_seconds``, at most ``most``) with the least projected wall time for ``points`` runs
    in populations of K, ``slots`` at a time: ceil(ceil(points / K) / slots) rounds of populations, each step
    ``step_seconds[K]``; the smaller K on a tie."""
    sizes = [k for k in sorted(step_seconds) if k <= max(1, most)]
    return min(sizes, key=lambda k: (math.ceil(math.ceil(points / k) / slots) * step_seconds[k], k))


def input_shape(config: dict) -> tuple[int, int, int]:
    """The shape of one example of the run's data set."""
    data = config["data"]
    if data["name"] == "synthetic":
        return datasets.SYNTHETIC_SHAPES[data["synthetic_shape"]]
    return datasets.SYNTHETIC_SHAPES["cifar" if data["name"] == "cifar10" else "mnist"]


class Probe:
    """Populations of the grid's net on ``device``, built, stepped and timed."""

    def __init__(self, config: dict, experiment: str, device: torch.device):
        self.device = device
        train = config["training"]
        self.batch_size, self.optimizer, self.lr = train["batch_size"], train["optimizer"], train["lr"]
        self.dtype = population.dtype_of(train["dtype"])
        self.graphs = training.use_graphs(train["graphs"], device, self.optimizer)
        self.shape = input_shape(config)
        self.kind = kinds.get(experiment).net  # masked, or supermask nets
        self.net = models.build(config["arch"]["name"], kind=self.kind, input_shape=self.shape).to(device, self.dtype)
        gen = torch.Generator().manual_seed(0)
        examples = max(2 * self.batch_size, config["data"]["val_size"])  # the validation set's size, evaluated
        self.train = (torch.rand(examples, *self.shape, generator=gen).to(device, self.dtype),
                      torch.randint(0, 10, (examples,), generator=gen).to(device))
        self.val = self.train
        examples = config["data"]["synthetic_train"] + config["data"].get("synthetic_test", 1000) \
            if config["data"]["name"] == "synthetic" else EXAMPLES.get(config["data"]["name"], 70_000)
        self.data_bytes = examples * math.prod(self.shape) * self.dtype.itemsize

    def trainee(self, size: int) -> training.Trainee:
        nets = [copy.deepcopy(self.net) for _ in range(size)]
        for k, net in enumerate(nets):
            if self.kind == "supermask":
                supermask.set_generator(net, rng.seeded(k, self.device))
        stack = population.Stack(nets)
        optimizer = population.make_optimizer(stack, self.optimizer, self.lr, self.graphs)
        return population.stack_trainee(stack, optimizer, self.train, self.val, self.batch_size,
                                        [torch.Generator().manual_seed(k) for k in range(size)], self.graphs)

    def peak_bytes(self, size: int) -> int:
        """Peak memory of a population of ``size`` through its warm-up, a few steps and an evaluation."""
        torch.cuda.synchronize(self.device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        trainee = self.trainee(size)
        for _ in range(training.GraphedStep.WARMUP + 2):
            trainee.step()
        trainee.evaluate()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        del trainee
        return peak

    def step_seconds(self, size: int) -> float:
        """Seconds per step of a population of ``size`` (after its warm-up)."""
        trainee = self.trainee(size)
        for _ in range(training.GraphedStep.WARMUP + 2):
            trainee.step()
        self.sync()
        start = time.perf_counter()
        for _ in range(TIMED_STEPS):
            trainee.step()
        self.sync()
        return (time.perf_counter() - start) / TIMED_STEPS

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def choose(config: dict, points: int, devices: list[str] | None, workers: int, experiment: str = "lottery",
           echo: Callable[[str], None] = print) -> int:
    """``--population auto``: K for ``points`` runs of ``config``'s kind (a resolved run config) on this machine's
    GPU, ``devices`` the sweep's device slots (``--gpus``; None: ``workers`` populations at a time on the runs'
    own device). Prints one line saying what K rests on."""
    if not torch.cuda.is_available():
        echo("sweep: --population auto: no GPU here, so single runs (K=1): on a CPU a population trains at about "
             "the speed of single runs")
        return 1
    device = torch.device(devices[0] if devices else "cuda:0")
    slots = len(devices) if devices else workers  # populations at a time
    sharing = devices.count(devices[0]) if devices else workers  # of them on one device
    training.device_settings(device)
    probe = Probe(config, experiment, device)
    small, large = (probe.peak_bytes(k) for k in PROBE_SIZES)
    member = max(1, (large - small) // (PROBE_SIZES[1] - PROBE_SIZES[0]))
    fixed = max(0, small - PROBE_SIZES[0] * member) + probe.data_bytes
    free, total = torch.cuda.mem_get_info(device)
    most = max(1, int((MEMORY_SHARE * free / sharing - fixed) // member))
    sizes = sorted({min(2 ** i, points, most) for i in range(int(math.log2(max(points, 1))) + 1)}
                   | {min(points, most)})
    step_seconds = {k: probe.step_seconds(k) for k in sizes}
    k = pick(points, slots, step_seconds, most)
    measured = ", ".join(f"K={s} {1000 * t:.3f}" for s, t in step_seconds.items())
    echo(f"sweep: --population auto on {device} ({torch.cuda.get_device_name(device)}, {total / 2**30:.0f} GiB, "
         f"{sharing} population(s) at a time on it): memory holds K <= {most:,} (about {member / 2**20:.1f} MiB per "
         f"member); ms per step {'as CUDA graphs' if probe.graphs else 'eager'}: {measured}; K={k}: "
         f"{math.ceil(points / k)} population(s) for the grid's {points} run(s)")
    return k
