"""The ``ticketlab`` command: every non-Sacred command of the project in one place.

    ticketlab study    [--home DIR] [--workers 2] ...         the main job: a small real study, then its report
    ticketlab sweep    -m DB_SPEC --criteria a,b --seeds 1,2,3 with reduced ...
    ticketlab runs     -m DB_SPEC [--where KEY=VALUE]         list the runs, by run id
    ticketlab report   -m DB_SPEC --out DIR [--where ...]     tables and figures, one comparison per setting
    ticketlab omniboard -m DB_SPEC [--port 9000]              browse the runs
    ticketlab db start|stop|status [--home DIR] [--port N]    the local run database (SecantusDB)
    ticketlab upload   -m DB_SPEC [--failure-dir DIR]         runs kept on disk while the database was down

A database is named the same way everywhere: ``-m HOST:PORT:DB``,
``-m mongodb://USER:PASSWORD@HOST:PORT/DB?authSource=admin``, or ``$TICKETLAB_MONGO_URI`` when no ``-m`` is
given. The experiments themselves are Sacred command lines: ``python -m experiments.lottery with ... -m DB_SPEC``.
Each command here is also ``python -m <module>`` (shown by ``ticketlab COMMAND --help``).
"""

from __future__ import annotations

import argparse
import sys


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


def python_command() -> str:
    """How to call the Python running this, for a command line ticketlab prints: ``.venv/bin/python`` from the
    repository, else its absolute path (a bare ``python`` outside the virtual environment lacks ticketlab)."""
    import os
    import shlex

    relative = os.path.relpath(sys.executable)
    return shlex.quote(relative if not relative.startswith("..") else sys.executable)


# command -> (module whose main(argv) runs it, argv prefix, one line of help)
COMMANDS = {
    "study": ("experiments.study", [], "the main job: a small real study into a local database, then its report"),
    "sweep": ("experiments.sweep", [], "run a grid of experiments in parallel, skipping completed runs"),
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
              "or $TICKETLAB_MONGO_URI."]
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
