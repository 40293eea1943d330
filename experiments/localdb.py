"""A local MongoDB-compatible run database: SecantusDB (``secantusd-py``, installed in the venv) as a process.

Used by the tests, the benchmarks and the one-command study; a lab server runs real MongoDB instead (docker/).
As a command, it keeps one server in the background with its data in a folder (default ``~/.ticketlab/db``):

    python -m experiments.localdb start [--home ~/.ticketlab] [--port 27017] [--db lottery]   # prints -m SPEC
    python -m experiments.localdb status
    python -m experiments.localdb stop      # clean shutdown; the data stay for the next start

(also ``ticketlab db start|stop|status``). ``start`` prints the database spec every command takes
(``-m 127.0.0.1:PORT:DB``) and the matching ``TICKETLAB_MONGO_URI``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors

from ticketlab.cli import Parser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_executable() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if not found:
        raise FileNotFoundError("secantusd-py not found: pip install SecantusDB (the dev extra installs it)")
    return found


class DatabaseServer:
    """``secantusd-py`` on a loopback port with its data in ``storage`` (reopened intact across restarts)."""

    def __init__(self, storage: str | Path, port: int | None = None, host: str = "127.0.0.1"):
        self.storage, self.host, self.port = Path(storage), host, port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def uri(self) -> str:
        return f"mongodb://{self.address}"

    def start(self, timeout: float = 60, detach: bool = False) -> "DatabaseServer":
        """Start the server and wait until it answers; ``detach`` lets it outlive this process. A port another process
        holds is a RuntimeError: the server answering there would not be this one (its data elsewhere)."""
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port left in TIME_WAIT is free
            try:
                probe.bind((self.host, self.port))
            except OSError:
                raise RuntimeError(f"port {self.port} on {self.host} is in use by another process (another run "
                                   f"database, with its data elsewhere?): choose another with --port, or stop "
                                   f"that one") from None
        self.storage.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.storage.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [server_executable(), "--host", self.host, "--port", str(self.port), "--storage-path",
             str(self.storage), "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=detach)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self.process.returncode}; see {log.name}")
            if self.ping():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"secantusd-py did not answer on {self.address} within {timeout:.0f} s")

    def ping(self) -> bool:
        try:
            with pymongo.MongoClient(self.address, serverSelectionTimeoutMS=500) as client:
                client.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> pymongo.MongoClient:
        return pymongo.MongoClient(self.address, serverSelectionTimeoutMS=5000)


# ------------------------------------------------------------------------------------------------ the command

DEFAULT_HOME = "~/.ticketlab"
DEFAULT_PORT = 27017


def home_dir(home: str | Path | None = None) -> Path:
    return Path(home or os.environ.get("TICKETLAB_HOME", DEFAULT_HOME)).expanduser()


def _state(home: Path) -> tuple[int, int] | None:
    """(pid, port) of the background server of ``home`` when it is alive."""
    try:
        pid, port = map(int, (home / "db.pid").read_text().split())
        os.kill(pid, 0)
        return pid, port
    except (OSError, ValueError):
        return None


def ensure_running(home: str | Path | None = None, port: int = DEFAULT_PORT) -> str:
    """The address of ``home``'s background server, started (detached) when it is not running."""
    home = home_dir(home)
    state = _state(home)
    if state and DatabaseServer(home / "db", state[1]).ping():
        return f"127.0.0.1:{state[1]}"
    server = DatabaseServer(home / "db", port).start(detach=True)
    (home / "db.pid").write_text(f"{server.process.pid} {server.port}\n")
    return server.address


def running_or_say(home: Path, port: int) -> str | None:
    """``ensure_running``, or None after one line on stderr saying why the database could not start."""
    try:
        return ensure_running(home, port)
    except (RuntimeError, FileNotFoundError) as error:
        print(f"error: the run database did not start: {error}", file=sys.stderr)
        return None


def stop(home: str | Path | None = None, timeout: float = 30) -> bool:
    """Stop ``home``'s background server cleanly (SIGTERM, then wait); False when none was running."""
    home = home_dir(home)
    state = _state(home)
    if not state:
        return False
    os.kill(state[0], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(state[0], 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(state[0], signal.SIGKILL)
    (home / "db.pid").unlink(missing_ok=True)
    return True


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.localdb",
                                     description="A local run database (SecantusDB) in the background.")
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--home", default=None, help=f"folder of the data (default $TICKETLAB_HOME or {DEFAULT_HOME})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--db", default="lottery", help="the database name the printed spec names (default lottery)")
    args = parser.parse_args(argv)
    home = home_dir(args.home)
    if args.command == "start":
        address = running_or_say(home, args.port)
        if address is None:
            return 1
        print(f"run database at {address} (data in {home / 'db'}); runs: -m {address}:{args.db}  "
              f"(or export TICKETLAB_MONGO_URI=mongodb://{address}/{args.db})")
    elif args.command == "stop":
        print("stopped" if stop(home) else "no run database was running")
    else:
        state = _state(home)
        print(f"running at 127.0.0.1:{state[1]} (pid {state[0]}, data in {home / 'db'}); runs: -m "
              f"127.0.0.1:{state[1]}:{args.db}" if state else "not running")
        return 0 if state else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
