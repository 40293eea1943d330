"""The ``ticketlab`` command: every command of the project in one place, each parsed the same way.

    ticketlab study     [--home DIR] [--workers 2] ...          the main job: a small real study, then its report
    ticketlab sweep     -m DB_SPEC --criteria a,b --seeds 1,2,3 with reduced ...
    ticketlab status    -m DB_SPEC [--sweep ID]                 a sweep's points, from the database
    ticketlab population -m DB_SPEC --members "seed=1; seed=2" with reduced ...
    ticketlab questions q9|q8|...|all [--home DIR]              the open questions and the rebuttal's claims
    ticketlab resume    -m DB_SPEC RUN_ID [with training.threads=2]   continue a run that died
    ticketlab runs      -m DB_SPEC [--where KEY=VALUE]          list the runs, by run id
    ticketlab report    -m DB_SPEC --out DIR [--where ...]      tables and figures, one comparison per setting
    ticketlab omniboard -m DB_SPEC [--port 9000]                browse the runs
    ticketlab db        start|stop|status [--home DIR] [--port N]   the local run database (SecantusDB)
    ticketlab upload    -m DB_SPEC [--failure-dir DIR]          runs kept on disk while the database was down

A database is named the same way everywhere: ``-m HOST:PORT:DB``,
``-m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin``, or ``$TICKETLAB_MONGO_URI`` when no ``-m`` is
given. The experiments themselves are Sacred command lines: ``python -m experiments.lottery with ... -m DB_SPEC``
(their ``-m`` goes through ``ticketlab.dbspec`` too). Each command here is also ``python -m <module>`` (shown by
``ticketlab COMMAND --help``).

Every command parses its command line with ``Parser`` (argparse): usage errors in one line, ``-m`` from
``add_database`` and ``Parser.database``, the Sacred-style ``with ...`` tail from ``Parser.parse_with``.
"""

from __future__ import annotations

import argparse
import os
import sys

from ticketlab import dbspec


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors are one line (the bad value and what is valid, then where the
    usage is), not argparse's usage block followed by the error: every ticketlab command parses with it. Run as
    ``ticketlab COMMAND``, a command's ``python -m MODULE`` program name reads ``ticketlab COMMAND`` (``rename``)."""

    rename: tuple[str, str] | None = None  # (python -m form, ticketlab form), set by ``main`` for the command it runs

    def __init__(self, *args, prog: str | None = None, **kwargs):
        if prog and Parser.rename and prog.startswith(Parser.rename[0]):
            prog = Parser.rename[1] + prog[len(Parser.rename[0]):]
        super().__init__(*args, prog=prog, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see {self.prog} --help\n")

    def parse_with(self, argv) -> argparse.Namespace:
        """The options before ``with``, and ``shared``: every argument after it (config updates and named configs,
        as for a Sacred experiment), e.g. ``--seeds 1,2 with reduced data.name=fashion_mnist``."""
        argv = list(argv)
        cut = argv.index("with") if "with" in argv else len(argv)
        args = self.parse_args(argv[:cut])
        args.shared = argv[cut + 1:]
        return args

    def database(self, args, spec: str | None = None, db_name: str | None = None,
                 optional: bool = False) -> dbspec.DbSpec | None:
        """The database the command names: ``-m`` (or ``spec``), else ``$TICKETLAB_MONGO_URI``; a bad or missing
        one ends the command in one line (``optional``: None when none is named). ``args.mongo_db`` becomes the
        spec as given, to hand on to the runs the command starts (their own records scrub its password)."""
        given = spec if spec is not None else args.mongo_db
        if not given and optional and not os.environ.get(dbspec.URI_VARIABLE):
            return None
        try:
            parsed = dbspec.parse(given, db_name)
        except dbspec.DbSpecError as error:  # its message shows the spec with any password masked
            self.error(str(error))
        args.mongo_db = given or os.environ[dbspec.URI_VARIABLE]
        return parsed


def add_database(parser, required: bool = False, help_text: str = "the run database") -> None:
    """The ``-m/--mongo_db`` option of a command line (a parser or a group of one), the same in every command."""
    parser.add_argument("-m", "--mongo_db", metavar="DB_SPEC", required=required, default=None,
                        help=f"{help_text}: {dbspec.FORMS} (default: ${dbspec.URI_VARIABLE})")


def python_command() -> str:
    """How to call the Python running this, for a command line ticketlab prints: ``.venv/bin/python`` from the
    repository, else its absolute path (a bare ``python`` outside the virtual environment lacks ticketlab)."""
    import shlex

    relative = os.path.relpath(sys.executable)
    return shlex.quote(relative if not relative.startswith("..") else sys.executable)


# command -> (module whose main(argv) runs it, argv prefix, one line of help). Modules are named, not imported: the
# command line stays on the ground floor, and ``ticketlab --help`` starts in a moment.
COMMANDS = {
    "study": ("experiments.study", [], "the main job: a small real study into a local database, then its report"),
    "sweep": ("experiments.sweep", [], "run a grid of experiments in parallel, skipping completed runs"),
    "status": ("experiments.sweep", ["status"], "a sweep's points (completed, running, dead, ...) from the database"),
    "population": ("experiments.population", [], "train runs that differ in seed, criterion or treatment together"),
    "questions": ("experiments.questions", [], "the rebuttal's open questions and claims as studies, with reports"),
    "resume": ("experiments.resume", [], "continue a run that died from its last finished round"),
    "runs": ("analysis.__main__", ["runs"], "list the runs of a database, by run id"),
    "report": ("analysis.__main__", ["report"], "write tables and figures (one comparison per setting)"),
    "omniboard": ("experiments.omniboard", [], "browse the runs in Omniboard"),
    "db": ("experiments.localdb", [], "the local run database: start, stop, status"),
    "upload": ("experiments.upload", [], "upload runs kept on disk while the database was down"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [__doc__.split("\n\n")[0].strip(), "", "usage: ticketlab COMMAND [--help] [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    lines += ["", "Name a database with -m HOST:PORT:DB, -m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin, "
              "or $TICKETLAB_MONGO_URI.",
              "The experiments are Sacred command lines: python -m experiments.lottery with ... -m DB_SPEC."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; valid choices: {', '.join(COMMANDS)} (ticketlab --help)",
              file=sys.stderr)
        return 2
    module_name, prefix, _ = COMMANDS[name]
    import importlib

    module = importlib.import_module(module_name)
    # help and errors name the command as typed: "ticketlab runs", not "python -m analysis runs"
    Parser.rename = (f"python -m {module_name.removesuffix('.__main__')}", "ticketlab" + ("" if prefix else f" {name}"))
    try:
        return module.main([*prefix, *rest]) or 0
    except SystemExit as exit_:  # argparse's --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    finally:
        Parser.rename = None


if __name__ == "__main__":
    sys.exit(main())
