"""A local MongoDB-compatible run database: SecantusDB (``secantusd-py``, installed in the venv) as a process.

Used by the tests, the benchmarks and the one-command study; a lab server runs real MongoDB instead (docker/).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pymongo.errors


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

    def start(self, timeout: float = 60) -> "DatabaseServer":
        self.storage.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.storage.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [server_executable(), "--host", self.host, "--port", str(self.port), "--storage-path",
             str(self.storage), "--log-level", "WARNING"], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
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
