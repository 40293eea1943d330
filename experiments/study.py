"""The main job: a small real study, from an empty machine to figures, in one command.

    python -m experiments.study [--home ~/.ticketlab] [--port 27017] [--workers 2]

1. starts the local run database in the background (``experiments.localdb``; data in ``<home>/db``), or reuses it;
2. runs the mask-criteria comparison of the paper on real Fashion-MNIST with lenet300_100 at reduced iterations
   (large_final, magnitude_increase, large_init and random; seeds 1-3; mask-1 original, mask-0 zero) through the
   sweep, which skips the runs already completed: running the study again retrains nothing that is done;
3. writes the analysis report (tables and figures) of its own runs (its settings: data, arch, iterations, rounds,
   eval_every, criteria, seeds, mask-1 and mask-0; other runs in the same database, e.g. of the README's sweep
   example, are left out) to ``<home>/study_report`` and prints where everything is, with commands that work as
   printed (the Python that ran the study).

Stop the database with ``python -m experiments.localdb stop``; its data survive a restart.
"""

from __future__ import annotations

import shlex
import sys
import time

from analysis.report import write_report
from experiments import localdb, sweep
from ticketlab.cli import Parser, python_command

CRITERIA = "large_final,magnitude_increase,large_init,random"
DB_NAME = "lottery"
EVAL_EVERY = 200  # the ``reduced`` named config's


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", default=None, help="folder for the database, logs and report "
                                                     "(default $TICKETLAB_HOME or ~/.ticketlab)")
    parser.add_argument("--port", type=int, default=localdb.DEFAULT_PORT, help="port of the local database")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--criteria", default=CRITERIA, help=f"comma-separated criteria (default {CRITERIA})")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=8, help="pruning rounds (8: about 17%% of weights left)")
    parser.add_argument("--iterations", type=int, default=3000, help="training steps per round")
    args = parser.parse_args(argv)
    home = localdb.home_dir(args.home)
    started = time.monotonic()

    address = localdb.running_or_say(home, args.port)
    if address is None:
        return 1
    spec = f"{address}:{DB_NAME}"
    print(f"study: run database at {address} (data in {home / 'db'})")
    settings = {"data.name": "fashion_mnist", "arch.name": "lenet300_100", "pruning.rounds": args.rounds,
                "training.iterations": args.iterations, "training.eval_every": EVAL_EVERY}
    code = sweep.main(["-m", spec, "--criteria", args.criteria, "--mask1", "original", "--mask0", "zero",
                       "--seeds", args.seeds, "--workers", str(args.workers), "--logs", str(home / "study_logs"),
                       "with", "reduced", *[f"{key}={value}" for key, value in settings.items()]])
    if code != 0:
        print("study: some runs failed (see the logs above); the report covers the runs that completed",
              file=sys.stderr)
    out = home / "study_report"
    where = {**settings, "mask1": "original", "mask0": "zero", "criterion": args.criteria.split(","),
             "seed": [int(seed) for seed in args.seeds.split(",")]}  # a config path or a frame column
    result = write_report(f"mongodb://{address}", DB_NAME, out, where=where, kinds=("lottery",))
    print(f"\nstudy: report in {out}/report.md, after {time.monotonic() - started:.0f} s")
    for line in result["summary"]:
        print("  " + line)
    figures = sorted(p.name for p in result["files"] if p.suffix == ".png")
    print(f"  figures: {', '.join(figures)}")
    python, home_option = python_command(), f" --home {shlex.quote(str(home))}" if args.home else ""
    print("\nbrowse and analyse the runs (from this folder):")
    print(f"  {python} -m experiments.omniboard -m {spec}    # then open the link it prints")
    print(f"  {python} -m analysis runs -m {spec}")
    options = " ".join(f"--where {key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                       for key, value in where.items())
    again = shlex.quote(str(home / "analysis_report"))  # a real folder: the command runs as printed
    print(f"  {python} -m analysis report -m {spec} --experiment lottery {options} --out {again}")
    print(f"  incense: incense.ExperimentLoader(mongo_uri='mongodb://{address}', db_name='{DB_NAME}')")
    print(f"  stop the database: {python} -m experiments.localdb stop{home_option}")
    return code


if __name__ == "__main__":
    sys.exit(main())
