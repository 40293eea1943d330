"""Command line of the analysis (also ``ticketlab runs`` and ``ticketlab report``).

    python -m analysis report -m 127.0.0.1:27017:lottery [--where criterion=large_final,random] --out DIR
    python -m analysis runs   -m 127.0.0.1:27017:lottery [--where data=fashion_mnist]

The database: ``-m HOST:PORT:DB``, ``-m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin``, or
``$TICKETLAB_MONGO_URI`` when no ``-m`` is given.
``--where KEY=VALUE`` filters on a frame column (criterion, mask1, seed, ...) or a config path (training.lr);
``KEY=A,B`` means any of them. Values are matched exactly, as numbers when they parse as numbers.
Exit status 2 with a one-line message for a wrong URI, an empty database or an unknown key.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from analysis.query import QueryError, load_runs, load_supermask_runs, resolve
from analysis.stats import ComparisonError
from experiments import dbspec
from ticketlab.cli import Parser
from ticketlab.schema import LOTTERY_COLUMNS, SUPERMASK_COLUMNS


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


def _spec(args) -> dbspec.DbSpec:
    """-m, or the older --mongo/--db pair, or $TICKETLAB_MONGO_URI."""
    return resolve(args.mongo_db or args.mongo, args.db)


def runs_command(args) -> int:
    where, spec = parse_where(args.where), _spec(args)
    frames = [load_runs(spec, where=where), load_supermask_runs(spec, where=where)]
    if all(f.empty for f in frames):
        raise QueryError(f"no runs in database {spec.db_name!r}" + (f" matching {where}" if where else ""))
    lottery, supermask = frames
    float_format = lambda v: f"{v:.4g}"  # noqa: E731
    if not lottery.empty:
        last = lottery.sort_values(["run_id", "round"]).groupby("run_id").tail(1).set_index("run_id")
        table = last[["status", *LOTTERY_COLUMNS, "round", "percent_remaining", "test_acc"]].rename(
            columns={"round": "rounds_done"})
        print(f"lottery runs ({len(table)}): last round reached")
        print(table.sort_index().to_string(float_format=float_format))
    if not supermask.empty:
        print(f"supermask runs ({len(supermask)}):")
        print(supermask.set_index("run_id").sort_index()[["status", *SUPERMASK_COLUMNS, "test_acc_mean",
                                                          "expected_density"]].to_string(float_format=float_format))
    return 0


def report_command(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a command writes files: no window
    from analysis.report import write_report

    result = write_report(_spec(args), None, args.out, parse_where(args.where))
    print(f"report written to {args.out}/report.md ({len(result['files'])} files)")
    for line in result["summary"]:
        print("  " + line)
    for line in result["notes"]:
        print("  note: " + line)
    return 0


COMMANDS = {"report": "write comparison tables and figures (one per setting), report.md embeds them",
            "runs": "list the runs, by run id"}


def add_arguments(command: argparse.ArgumentParser, name: str) -> None:
    """The options of ``runs`` or ``report`` (shared with the ``ticketlab`` command)."""
    dbspec.add_argument(command)
    command.add_argument("--mongo", help=argparse.SUPPRESS)  # older form: --mongo HOST:PORT --db DB
    command.add_argument("--db", help=argparse.SUPPRESS)
    command.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="filter (repeatable): a column (criterion, seed, ...) or a config path "
                              "(training.lr); KEY=A,B matches any of A, B")
    if name == "report":
        command.add_argument("--out", required=True, help="folder for tables and figures")


def run(name: str, args) -> int:
    pd.set_option("display.width", 160)
    try:
        return (report_command if name == "report" else runs_command)(args)
    except (QueryError, ComparisonError) as error:
        print(f"error: {dbspec.scrub(error)}", file=sys.stderr)
        return 2


def main(argv=None) -> int:
    parser = Parser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text), name)
    args = parser.parse_args(argv)
    return run(args.command, args)


if __name__ == "__main__":
    sys.exit(main())
