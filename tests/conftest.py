"""Shared fixtures: a real SecantusDB server process (MongoDB wire protocol over TCP) and command runners."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymongo
import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DatabaseServer:
    """``secantusd-py`` on a free loopback port with its data in ``storage`` (survives restarts)."""

    def __init__(self, storage: Path, port: int | None = None):
        self.storage, self.port = storage, port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "DatabaseServer":
        log = open(self.storage.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [str(VENV_BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", str(self.storage), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"secantusd-py exited with {self.process.returncode}; see {log.name}")
            try:
                pymongo.MongoClient(self.address, serverSelectionTimeoutMS=500).admin.command("ping")
                return self
            except pymongo.errors.PyMongoError:
                time.sleep(0.2)
        raise RuntimeError("secantusd-py did not answer within 60 s")

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


@pytest.fixture(scope="session")
def db_server(tmp_path_factory):
    server = DatabaseServer(tmp_path_factory.mktemp("secantus") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def db_name():
    return "t_" + uuid.uuid4().hex[:10]


@pytest.fixture
def ticketlab_env(tmp_path):
    """Environment for command-line runs: failure dir and data root inside the test's tmp folder."""
    return dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path / "failed"), TICKETLAB_DATA=str(tmp_path / "data"),
                PYTHONWARNINGS="ignore")


def run_cli(module: str, *args: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user types it; output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
