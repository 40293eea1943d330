"""Command line of the analysis.

    python -m analysis report --mongo 127.0.0.1:27017 --db lottery [--where criterion=large_final,random] --out DIR
    python -m analysis runs   --mongo 127.0.0.1:27017 --db lottery [--where data=fashion_mnist]

``--where KEY=VALUE`` filters on a frame column (criterion, mask1, seed, ...) or a config path (training.lr);
``KEY=A,B`` means any of them. Values are matched exactly, as numbers when they parse as numbers.
Exit status 2 with a one-line message for a wrong URI, an empty database or an unknown key.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from analysis.query import QueryError, load_runs, load_supermask_runs
from analysis.report import write_report
from analysis.stats import ComparisonError


def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_where(items: list[str]) -> dict:
    where = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise QueryError(f"--where {item!r} is not KEY=VALUE")
        values = [_value(v) for v in value.split(",")]
        where[key] = values if len(values) > 1 else values[0]
    return where


def runs_command(args) -> int:
    where = parse_where(args.where)
    frames = [load_runs(args.mongo, args.db, where), load_supermask_runs(args.mongo, args.db, where)]
    if all(f.empty for f in frames):
        raise QueryError(f"no runs in database {args.db!r}" + (f" matching {where}" if where else ""))
    lottery, supermask = frames
    if not lottery.empty:
        last = lottery.sort_values("round").groupby("run_id").tail(1).set_index("run_id")
        table = last[["status", "seed", "arch", "data", "criterion", "mask1", "mask0", "round",
                      "percent_remaining", "test_acc"]].rename(columns={"round": "rounds_done"})
        print(f"lottery runs ({len(table)}): last round reached")
        print(table.to_string(float_format=lambda v: f"{v:.4g}"))
    if not supermask.empty:
        print(f"supermask runs ({len(supermask)}):")
        print(supermask.set_index("run_id")[["status", "seed", "arch", "data", "signed_constant", "rescale",
                                             "test_acc_mean", "expected_density"]]
              .to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


def report_command(args) -> int:
    result = write_report(args.mongo, args.db, args.out, parse_where(args.where))
    print(f"report written to {args.out}/report.md ({len(result['files'])} files)")
    for line in result["summary"]:
        print("  " + line)
    for line in result["notes"]:
        print("  note: " + line)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("report", "write comparison tables and figures"), ("runs", "list the runs")):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("--mongo", required=True, help="MongoDB URI or HOST:PORT, e.g. 127.0.0.1:27017")
        command.add_argument("--db", required=True, help="database name, e.g. lottery")
        command.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                             help="filter (repeatable); KEY=A,B matches any of A, B")
        if name == "report":
            command.add_argument("--out", required=True, help="folder for tables and figures")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 160)
    try:
        return (report_command if args.command == "report" else runs_command)(args)
    except (QueryError, ComparisonError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
