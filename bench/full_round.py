"""One full-protocol lottery round of the paper's FC criteria study as one population, timed, and the study's wall
time projected from it.

    python bench/full_round.py --device cuda                       # 11 criteria x 5 seeds, 50,000 steps
    python bench/full_round.py --device cpu --members 3 --steps 20 --train 1200 --val 200 --test 200   # a dry run

The paper's FC criteria study trains LeNet-300-100 with 11 criteria x 5 seeds x 25 rounds x 50,000 steps at batch 60.
Here its 55 runs are one population (``masking.population_procedures.lottery_rounds``, the code a population run
of ``experiments.population`` trains with, steps as CUDA graphs per ``--graphs``) on synthetic data of MNIST's size
(``experiments.datasets`` ``synthetic``: 55,000 training, 5,000 validation, 10,000 test examples; timing only), and
one round is timed from end to end as a lottery round runs: each member's mask by its criterion from round 0's
weights (a stand-in for trained ones: the initial weights plus noise), the rewind, the untrained test accuracy,
``--steps`` training steps with validation every 100 steps and early stopping, the test accuracy at the end and at
the early-stopping point, the records. Printed: the round's seconds, per step and per member-step, the share of
the training loop (``train_seconds``), and the projected wall time of the whole study (``--rounds`` rounds of that
round, one after another: a population's rounds are sequential), against the issue's goal (30 minutes) and aim
(15). The run database's writes (Sacred metrics, artifacts) are not included.
"""

from __future__ import annotations

import time

import torch

from experiments import datasets
from masking import criteria, lottery, population_procedures, training
from masking.training import TrainingConfig
from ticketlab.cli import Parser

GOAL_MINUTES, AIM_MINUTES = 30, 15  # the goal and aim for the whole FC criteria study on one GPU


def round_zero(setup: lottery.Setup, generator: torch.Generator) -> lottery.Checkpoint:
    """A finished round 0 to continue from: every weight kept, final weights the initial ones plus noise."""
    final = {name: w + 0.05 * torch.randn(w.shape, generator=generator).to(w.device)
             for name, w in setup.init_weights.items()}
    return lottery.Checkpoint(0, final, lottery.first_mask(setup))


def timed_round(specs: list[lottery.LotterySpec], placed: training.Placed, device: torch.device,
                graphs: str) -> tuple[float, list]:
    """Seconds of round 1 of the population of ``specs`` (set up, and round 0 made, beforehand), and its results."""
    setups = [lottery.setup(spec, placed, device, graphs=graphs) for spec in specs]
    generator = torch.Generator().manual_seed(0)
    start = [round_zero(setup, generator) for setup in setups]
    training.make_optimizer(setups[0].net)  # torch's lazy imports of a first optimizer (a second): once a process
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    results, = list(population_procedures.lottery_rounds(setups, start=start))
    return time.perf_counter() - began, results  # the records hold host numbers: the round's work is done


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    parser.add_argument("--members", type=int, default=55,
                        help="population size: the first N of 11 criteria x seeds 1, 2, ... (default 55: 11 x 5)")
    parser.add_argument("--steps", type=int, default=50_000, help="training steps of the round (the paper's)")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=25, help="rounds of the study the projection assumes")
    parser.add_argument("--train", type=int, default=55_000, help="training examples (MNIST's 55,000)")
    parser.add_argument("--val", type=int, default=5_000, help="validation examples")
    parser.add_argument("--test", type=int, default=10_000, help="test examples")
    parser.add_argument("--graphs", default="auto", help="training.graphs: auto (CUDA graphs on a GPU) or off")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        device, execution = training.prepare_execution(args.threads, args.device, args.graphs)
    except ValueError as error:  # one line, before anything is built
        parser.error(str(error).replace("training.device", "--device").replace("training.graphs", "--graphs"))
    names = criteria.names()
    specs = [lottery.LotterySpec("lenet300_100", 1 + i // len(names), TrainingConfig(
        args.steps, 1.2e-3, batch_size=60, eval_every=args.eval_every), criterion=names[i % len(names)], rounds=1)
        for i in range(args.members)]
    data = datasets.load("synthetic", "/nonexistent", args.val, 0, synthetic_shape="mnist",
                         synthetic_train=args.train + args.val, synthetic_test=args.test)
    placed = training.place(data, device)
    graphed = training.use_graphs(args.graphs, device, "adam")
    print(f"{len(specs)} members ({len(set(s.criterion for s in specs))} criteria x seeds "
          f"{min(s.seed for s in specs)}-{max(s.seed for s in specs)}), lenet300_100 on {device} "
          f"({execution['device_name']}), torch {execution['torch']}, CUDA {execution['cuda']}; "
          f"{'CUDA graphs' if graphed else 'eager steps'}; {args.steps:,} steps at batch 60, validation on "
          f"{args.val:,} every {args.eval_every}, test on {args.test:,}", flush=True)
    try:
        seconds, results = timed_round(specs, placed, device, args.graphs)
    except RuntimeError as error:  # a step a CUDA graph cannot hold: say so, and time the eager round instead
        if not graphed:
            raise
        print(f"graphs failed: {str(error).splitlines()[0][:300]}; the round again with eager steps", flush=True)
        graphed = False
        seconds, results = timed_round(specs, placed, device, "off")
    failed = [r for r in results if not isinstance(r, lottery.RoundResult)]
    records = [r.record for r in results if isinstance(r, lottery.RoundResult)]
    loop = records[0].train_seconds if records else float("nan")
    members = len(specs)
    print(f"one round (round 1, {records[0].percent_remaining:.1f}% of the weights kept): {seconds:.1f} s, "
          f"{1000 * seconds / args.steps:.4f} ms per step, {1000 * seconds / (args.steps * members):.5f} ms per "
          f"member-step; the training loop (steps and validations) {loop:.1f} s, the rest (masks, rewinds, test "
          f"evaluations, records) {seconds - loop:.1f} s; {len(failed)} member(s) failed")
    study = args.rounds * seconds
    steps = members * args.rounds * args.steps
    verdict = "within the aim" if study <= 60 * AIM_MINUTES else \
        "within the goal" if study <= 60 * GOAL_MINUTES else "over the goal"
    print(f"projected: the FC criteria study ({members} runs x {args.rounds} rounds x {args.steps:,} steps = "
          f"{steps:,} member-steps) as one population, {args.rounds} rounds one after another: "
          f"{study / 60:.1f} minutes ({verdict}: goal {GOAL_MINUTES}, aim {AIM_MINUTES})")
    print(f"summary: full round {seconds:.1f} s ({1000 * seconds / args.steps:.3f} ms/step, K={members}, "
          f"{'graphs' if graphed else 'eager'}); study projected {study / 60:.1f} min")


if __name__ == "__main__":
    main()
