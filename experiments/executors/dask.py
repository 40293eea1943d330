"""``--executor dask``: each unit is a task (``run_unit``) on a Dask distributed cluster: ``--scheduler
tcp://HOST:PORT`` (one started with ``dask scheduler``, and ``dask worker`` processes each started in a ticketlab
checkout or install with ``--nthreads 1``) or ``--scheduler local`` (a LocalCluster of ``--workers`` single-thread
worker processes on 127.0.0.1). With ``--gpus``, each task asks for ``GPU=1/--runs-per-gpu`` of the worker resource
(start GPU workers with ``--resources GPU=1`` and their own CUDA_VISIBLE_DEVICES; a local cluster does that itself:
one worker per GPU id, ``gpu_workers``). Dask moves the task of a lost worker to another worker; the claim makes that
retry resume the run instead of repeating it. ``--detach`` leaves the tasks on the cluster."""

from __future__ import annotations

import logging
from pathlib import Path

from experiments.executors.base import FutureExecutor, local_gpu_ids, register
from experiments.executors.units import Unit, run_unit


@register
class DaskExecutor(FutureExecutor):
    name = "dask"
    help = "a Dask distributed cluster (--scheduler)"
    FLAGS = (("--scheduler", {"default": None, "metavar": "tcp://HOST:PORT|local", "help": "the Dask scheduler"}),)

    def __init__(self, scheduler: str, workers: int = 2, gpu_share: float | None = None,
                 gpus: list[str] | None = None):
        """Units on ``scheduler`` (``tcp://HOST:PORT``, or ``local``: a cluster of ``workers`` single-thread worker
        processes on 127.0.0.1). With ``gpu_share``, each unit needs that share of a worker's resource ``GPU``; a
        local cluster then has one worker per id in ``gpus`` (``gpu_workers``) instead of ``workers``."""
        super().__init__()
        from distributed import Client, LocalCluster, SpecCluster

        self.cluster = None
        if scheduler == "local" and gpu_share:
            if not gpus:
                raise ValueError("a local Dask cluster for GPU runs needs the GPU ids (--gpus)")
            self.cluster = SpecCluster(workers=gpu_workers(gpus, max(1, round(1 / gpu_share))),
                                       scheduler=_local_scheduler(), silence_logs=logging.WARN)
            self.client = Client(self.cluster)
        elif scheduler == "local":
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            self.client = Client(scheduler, timeout=30)
        self.resources = {"GPU": gpu_share} if gpu_share else None

    @classmethod
    def check(cls, args, parser) -> None:
        if not args.scheduler:
            parser.error("--executor dask needs --scheduler tcp://HOST:PORT (or --scheduler local)")
        if args.scheduler != "local" and "://" not in args.scheduler:
            parser.error(f"--scheduler {args.scheduler!r} is not tcp://HOST:PORT or local")
        if args.detach and args.scheduler == "local":
            parser.error("--detach needs a scheduler that outlives this command (--scheduler tcp://HOST:PORT)")
        # a local cluster's GPU workers: this machine's GPUs
        args.gpu_ids = local_gpu_ids(args, parser) if args.gpus is not None and args.scheduler == "local" else None
        return None

    @classmethod
    def describe(cls, args, devices: list[str] | None) -> str:
        return f"Dask scheduler {args.scheduler}"

    @classmethod
    def create(cls, args, db, logs: Path, devices: list[str] | None) -> "DaskExecutor":
        return cls(args.scheduler, args.workers, 1 / args.runs_per_gpu if args.gpus else None,
                   [str(i) for i in args.gpu_ids] if getattr(args, "gpu_ids", None) else None)

    def submit(self, units: list[Unit]) -> None:
        for unit in units:
            future = self.client.submit(run_unit, unit, key=f"ticketlab-{unit.token.replace('/', '-')}", pure=False,
                                        resources=self.resources)
            self.futures[future] = unit

    @staticmethod
    def _wait(futures, timeout):
        from distributed import wait

        try:
            return wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return [], futures

    def detach(self) -> None:
        from distributed import fire_and_forget

        fire_and_forget(list(self.futures))
        self.futures.clear()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def _local_scheduler() -> dict:
    from distributed import Scheduler

    return {"cls": Scheduler, "options": {"host": "127.0.0.1", "port": 0, "dashboard": False,
                                          "dashboard_address": None}}


def gpu_workers(gpus: list[str], runs_per_gpu: int = 1) -> dict[str, dict]:
    """Dask worker specs (``SpecCluster``) of a local cluster for GPU runs: one worker process per GPU id, which
    sees only its GPU (``CUDA_VISIBLE_DEVICES``, inherited by the runs it starts, which use ``cuda``), offers the
    resource ``GPU=1`` and runs up to ``runs_per_gpu`` units at a time."""
    from distributed import Nanny

    return {f"gpu-{gpu}": {"cls": Nanny, "options": {
        "host": "127.0.0.1", "nthreads": runs_per_gpu, "resources": {"GPU": 1}, "dashboard": False,
        "env": {"CUDA_VISIBLE_DEVICES": str(gpu)}, "silence_logs": logging.WARN}} for gpu in gpus}
