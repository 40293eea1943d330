"""Real distributed engines on 127.0.0.1 for tests and bench/: a Dask scheduler with worker processes, and a
single-node Slurm cluster (munged, slurmctld, slurmd) with its state in a temporary folder and free ports.

Both are context managers that stop every process they started, also when the body fails.
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

from experiments.localdb import free_port

REPO = Path(__file__).resolve().parent.parent


def _stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM the process's group (it runs in its own session), then SIGKILL what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
    try:  # children that outlived their parent (an orphaned run) are in the same group
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


class DaskCluster:
    """``dask scheduler`` and ``workers`` × ``dask worker --nthreads 1`` processes on 127.0.0.1 (free ports)."""

    def __init__(self, workers: int = 2, env: dict | None = None, log_dir: Path | None = None):
        self.n_workers, self.env = workers, dict(env or os.environ)
        self.log_dir = Path(log_dir or REPO)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "dask", *args], cwd=REPO, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def start_worker(self) -> subprocess.Popen:
        worker = self._spawn(f"dask-worker-{len(self.workers)}", "worker", self.address, "--nthreads", "1",
                             "--host", "127.0.0.1", "--no-dashboard", "--no-nanny", "--name",
                             f"w{len(self.workers)}")
        self.workers.append(worker)
        return worker

    def n_connected(self) -> int:
        from distributed import Client

        with Client(self.address, timeout=10) as client:
            return len(client.scheduler_info()["workers"])

    def __enter__(self) -> "DaskCluster":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.scheduler = self._spawn("dask-scheduler", "scheduler", "--host", "127.0.0.1", "--port",
                                     str(self.port), "--no-dashboard")
        try:
            _wait_for(lambda: _port_open(self.port), 60, "dask scheduler")
            for _ in range(self.n_workers):
                self.start_worker()
            _wait_for(lambda: self.n_connected() == self.n_workers, 60, f"{self.n_workers} dask workers")
        except BaseException:
            self.__exit__()
            raise
        return self

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL a worker and every process it started: a lost machine."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def __exit__(self, *exc) -> None:
        for process in self.workers + ([self.scheduler] if self.scheduler else []):
            _stop(process)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


SLURM_MISSING = [name for name in ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
                 if not shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")]


class SlurmCluster:
    """A single-node Slurm 22.05 cluster of this host: a private munged (its own key and socket), slurmctld and
    slurmd on free ports, all state in ``folder``, no cgroup.conf (22.05 rejects CgroupPlugin=disabled).
    ``env`` has SLURM_CONF set for sbatch/squeue/scancel."""

    def __init__(self, folder: Path, cpus: int = 2):
        self.folder, self.cpus = Path(folder), cpus
        self.processes: list[subprocess.Popen] = []
        self.conf = self.folder / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    @staticmethod
    def which(name: str) -> str:
        return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")

    @staticmethod
    def memory_mb() -> int:
        """Half this machine's memory: what the test node offers to jobs (--mem asks within it)."""
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 ** 21

    def _write_conf(self) -> None:
        host = socket.gethostname()
        for sub in ("state", "spool", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        self.munge_socket = self.folder / "munge" / "munge.socket"
        key = self.folder / "munge" / "munge.key"  # this cluster's own key: 1 KiB of random bytes, mode 400
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text("\n".join([
            "ClusterName=ticketlab-test",
            f"SlurmctldHost={host}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "MinJobAge=600",
            "InactiveLimit=0",
            "KillWait=5",
            "SlurmdTimeout=60",
            f"StateSaveLocation={self.folder / 'state'}",
            f"SlurmdSpoolDir={self.folder / 'spool'}",
            f"SlurmctldPidFile={self.folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.folder / 'slurmctld.log'}",
            f"SlurmdLogFile={self.folder / 'slurmd.log'}",
            f"NodeName={host} CPUs={self.cpus} RealMemory={self.memory_mb()} State=UNKNOWN",
            f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def _spawn(self, *command: str) -> subprocess.Popen:
        log = open(self.folder / f"{Path(command[0]).name}.out", "ab")
        process = subprocess.Popen(list(command), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes.append(process)
        return process

    def node_ready(self) -> bool:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
        return result.returncode == 0 and result.stdout.strip() in {"idle", "mixed", "allocated"}

    def __enter__(self) -> "SlurmCluster":
        if SLURM_MISSING:
            raise RuntimeError(f"Slurm is not installed here (missing {', '.join(SLURM_MISSING)})")
        self._write_conf()
        try:
            self._spawn(self.which("munged"), "--foreground", "--force", f"--socket={self.munge_socket}",
                        f"--pid-file={self.folder / 'munge' / 'munged.pid'}",
                        f"--log-file={self.folder / 'munge' / 'munged.log'}",
                        f"--seed-file={self.folder / 'munge' / 'munged.seed'}",
                        f"--key-file={self.folder / 'munge' / 'munge.key'}")
            _wait_for(self.munge_socket.exists, 20, "munged")
            self._spawn(self.which("slurmctld"), "-D", "-i", "-f", str(self.conf))
            self._spawn(self.which("slurmd"), "-D", "-f", str(self.conf))
            _wait_for(self.node_ready, 60, "the Slurm node")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["scancel", "--user=root", "--full"], env=self.env, capture_output=True, timeout=30)
        for process in reversed(self.processes):
            _stop(process, timeout=15)
