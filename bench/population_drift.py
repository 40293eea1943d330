"""How far float32 population members drift from their single runs, and whether a study's conclusion changes.

    python bench/population_drift.py [--seeds 1,2,3,4,5,6] [--criteria large_final,random] [--rounds 4]
        [--iterations 1000] [--data fashion_mnist] [--dtype float32]

Runs the lottery procedure (``masking.lottery``) for every (criterion, seed) twice: as single runs, and as one
population (``masking.population_procedures``) of all of them, in ``--dtype``. Prints the distribution of
|delta test_acc| per round (member vs its single run: median, 90th percentile, max), the seed-to-seed spread of
test_acc for comparison, and per round the mean test_acc of each criterion and the difference to ``random`` with
Welch's t-test p-value, for singles and members side by side, and in how many (criterion, round) cells the sign
of the difference and its significance at p < 0.05 agree.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from scipy import stats

from experiments import datasets
from masking import lottery, population, population_procedures, training
from ticketlab.cli import Parser


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,6")
    parser.add_argument("--criteria", default="large_final,random")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--root", default="~/.ticketlab/data")
    parser.add_argument("--dtype", default="float32", choices=list(population.DTYPES))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    training.cpu_settings(args.threads)
    dtype = population.dtype_of(args.dtype)
    datasets.ensure_available(args.data, args.root)
    data = datasets.load(args.data, args.root, 5000, 0)
    config = training.TrainingConfig(iterations=args.iterations, lr=1.2e-3, batch_size=60,
                                     eval_every=args.eval_every)
    seeds = [int(s) for s in args.seeds.split(",")]
    criteria = args.criteria.split(",")
    specs = [lottery.LotterySpec("lenet300_100", seed=s, training=config, criterion=c, rounds=args.rounds)
             for c in criteria for s in seeds]

    start = time.perf_counter()
    single = [[r.record for r in lottery.iterate_rounds(lottery.setup(spec, data, dtype=dtype))] for spec in specs]
    single_seconds = time.perf_counter() - start
    start = time.perf_counter()
    members: list[list] = [[] for _ in specs]
    for results in population_procedures.lottery_rounds([lottery.setup(spec, data, dtype=dtype) for spec in specs]):
        for m, result in enumerate(results):
            members[m].append(result.record)
    population_seconds = time.perf_counter() - start

    print(f"lenet300_100 on {args.data}, {args.dtype}, {len(specs)} runs ({', '.join(criteria)} x seeds {args.seeds}),"
          f" {args.rounds} pruning rounds x {args.iterations} steps; singles {single_seconds:.0f} s, one population "
          f"{population_seconds:.0f} s (1 process, {args.threads} thread(s))")
    print("\n|delta test_acc| member vs its single run, per round (and the seed-to-seed std of test_acc):")
    all_deltas = []
    for k in range(args.rounds + 1):
        deltas = [abs(members[m][k].test_acc - single[m][k].test_acc) for m in range(len(specs))]
        all_deltas += deltas
        spread = statistics.mean(statistics.stdev([single[m][k].test_acc for m, spec in enumerate(specs)
                                                   if spec.criterion == c]) for c in criteria)
        masks_equal = sum(members[m][k].mask_hash == single[m][k].mask_hash for m in range(len(specs)))
        print(f"  round {k} ({single[0][k].percent_remaining:5.1f}% left): median {np.median(deltas):.4f}, "
              f"p90 {np.percentile(deltas, 90):.4f}, max {max(deltas):.4f}; seed std {spread:.4f}; "
              f"masks identical {masks_equal}/{len(specs)}")
    print(f"  all rounds: median {np.median(all_deltas):.4f}, p90 {np.percentile(all_deltas, 90):.4f}, "
          f"max {max(all_deltas):.4f}")

    if "random" in criteria:
        print("\nmean test_acc minus random's (Welch t-test p), singles | members:")
        signs_agree = significance_agrees = compared = 0
        for c in criteria:
            if c == "random":
                continue
            for k in range(args.rounds + 1):
                line = []
                signs = []
                for runs in (single, members):
                    a = [runs[m][k].test_acc for m, s in enumerate(specs) if s.criterion == c]
                    b = [runs[m][k].test_acc for m, s in enumerate(specs) if s.criterion == "random"]
                    diff, p = np.mean(a) - np.mean(b), stats.ttest_ind(a, b, equal_var=False).pvalue
                    line.append(f"{diff:+.4f} (p={p:.3g})")
                    signs.append((np.sign(diff), p < 0.05))
                compared += 1
                signs_agree += signs[0][0] == signs[1][0]
                significance_agrees += signs[0][1] == signs[1][1]
                print(f"  {c} round {k}: {line[0]} | {line[1]}{'' if signs[0] == signs[1] else '  <- differs'}")
        print(f"conclusions, members vs singles: the sign of (criterion - random) agrees in {signs_agree}/{compared} "
              f"(criterion, round) cells, significance at p < 0.05 in {significance_agrees}/{compared}")


if __name__ == "__main__":
    main()
