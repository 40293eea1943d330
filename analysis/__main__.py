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
import shlex
import sys

import pandas as pd

from analysis.query import QueryError, load_run_list
from analysis.stats import ComparisonError
from ticketlab import dbspec, kinds
from ticketlab.cli import Parser, add_database, python_command


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


def _age(moment, now) -> str:
    """How long ago a (UTC) time was: ``12 s``, ``3 min``, ``2.5 h``."""
    if moment is None or pd.isna(moment):
        return "-"
    seconds = (now - pd.Timestamp(moment).tz_localize(None)).total_seconds()
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def runs_command(args, spec: dbspec.DbSpec) -> int:
    """Every run of every kind, by run id, whatever its status (a run killed before finishing a round too), and how
    to continue the runs of a resumable kind that did not finish."""
    where = parse_where(args.where)
    listed = {name: load_run_list(spec, where=where, experiment=name) for name in kinds.names()}
    if all(runs.empty for runs in listed.values()):
        raise QueryError(f"no runs in database {spec.db_name!r}" + (f" matching {where}" if where else ""))
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    first = True
    for name, runs in listed.items():
        if runs.empty:
            continue
        kind = kinds.get(name)
        table = runs.set_index("run_id").sort_index()
        table["heartbeat"] = [_age(t, now) for t in table["heartbeat"]]
        print(("" if first else "\n") + f"{name} runs ({len(table)}):" + (
            " rounds finished (round 0 is the dense net), the last one's result, the last heartbeat"
            if kind.per_round else ""))
        print(table[["status", *kind.columns, *(["rounds_done"] if kind.per_round else []), *kind.results,
                     "heartbeat"]].to_string(float_format=lambda v: f"{v:.4g}", na_rep="-"))
        if kind.resumable:
            print_resume_commands(kind, table, spec)
        first = False
    return 0


def print_resume_commands(kind, table: pd.DataFrame, spec: dbspec.DbSpec) -> None:
    """How each run of ``table`` that is not COMPLETED continues (its kind resumes dead runs)."""
    unfinished = table[table["status"] != "COMPLETED"]
    if unfinished.empty:
        return
    python, db = python_command(), shlex.quote(spec.option)
    print(f"\n{len(unfinished)} {kind.name} run(s) not COMPLETED; a run whose process died continues from its last "
          f"finished round with:")
    for run_id, row in unfinished.head(10).iterrows():
        alive = " (RUNNING: only if its process died)" if row["status"] == "RUNNING" else ""
        print(f"  {python} -m {kind.module} -m {db} --resume {run_id}    # {row['status']}, "
              f"{row['rounds_done']} round(s) finished{alive}")
    if len(unfinished) > 10:
        print(f"  ... and {len(unfinished) - 10} more")


def report_command(args, spec: dbspec.DbSpec) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a command writes files: no window
    from analysis.report import write_report

    result = write_report(spec, None, args.out, parse_where(args.where), kinds=args.experiment,
                          replicas=args.replicas)
    print(f"report written to {args.out}/report.md ({len(result['files'])} files)")
    for line in result["summary"]:
        print("  " + line)
    for line in result["notes"]:
        print("  note: " + line)
    return 0


COMMANDS = {"report": (report_command, "write comparison tables and figures (one per setting), report.md embeds "
                                           "them"),
            "runs": (runs_command, "list the runs, by run id")}


def add_arguments(command: argparse.ArgumentParser, name: str) -> None:
    """The options of ``runs`` or ``report`` (shared with the ``ticketlab`` command)."""
    add_database(command)
    command.add_argument("--mongo", help=argparse.SUPPRESS)  # older form: --mongo HOST:PORT --db DB
    command.add_argument("--db", help=argparse.SUPPRESS)
    command.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                         help="filter (repeatable): a column (criterion, seed, ...) or a config path "
                              "(training.lr); KEY=A,B matches any of A, B")
    if name == "report":
        command.add_argument("--out", required=True, help="folder for tables and figures")
        command.add_argument("--experiment", action="append", choices=kinds.names(),
                             help="the kind of runs to report on (repeatable; default every kind)")
        command.add_argument("--replicas", choices=("first", "last", "mean"), default="first",
                             help="two runs of one seed of one condition are one sample: use its first run "
                                  "(default), its last, or their mean")


def main(argv=None) -> int:
    parser = Parser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (function, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command, name)
        command.set_defaults(function=function, parser=command)
    args = parser.parse_args(argv)
    spec = args.parser.database(args, args.mongo_db or args.mongo, db_name=args.db)  # or the older --mongo/--db
    pd.set_option("display.width", 160)
    try:
        return args.function(args, spec)
    except (QueryError, ComparisonError) as error:
        print(f"error: {dbspec.scrub(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
