"""Shared fixtures: a real SecantusDB server process (MongoDB wire protocol over TCP) and command runners."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from experiments.localdb import DatabaseServer


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: exercises a CUDA device where torch sees one, the CPU elsewhere "
                                       "(scripts/gpu-check.sh runs them all: pytest -m cuda)")


@pytest.fixture
def one_thread():
    """One torch thread and flushed denormals, the process settings the experiments apply: the reference hashes
    were made that way, and tiny batches run many times faster than with torch's default on a busy machine."""
    import torch

    from masking import training
    threads = torch.get_num_threads()
    training.cpu_settings(1)
    yield
    torch.set_num_threads(threads)


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


def ctrl_c_interrupts() -> None:
    """A ``preexec_fn`` for a child a test stops with SIGINT: SIGINT back to its default, so Python turns it into
    KeyboardInterrupt as at a terminal. A shell ignores SIGINT in background jobs (``make test &``, ``nohup``)
    and children inherit that; the child would then never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(module: str, *args: str, env=None, timeout=300) -> subprocess.CompletedProcess:
    """``python -m <module> <args>`` as a user types it; output captured as text."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, stdin=subprocess.DEVNULL)
