"""Where the units of a sweep run: this machine (``local``), a Dask distributed cluster (``dask``) or Slurm (``slurm``),
each an executor in a module of its own that registers it in ``EXECUTORS`` (``base``); what a unit does wherever it
runs is ``units``. The sweep names no executor: it asks the registry (``--executor NAME``)."""

from experiments.executors.base import EXECUTORS, Executor, add_arguments, chosen, gpu_ids, register
from experiments.executors.local import LocalExecutor, PopulationExecutor  # the default: registered first
from experiments.executors.dask import DaskExecutor  # noqa: I001
from experiments.executors.slurm import SlurmExecutor
from experiments.executors.units import COMPLETED, FAILED, HELD, LOST, Unit, run_group, run_unit

__all__ = ["COMPLETED", "EXECUTORS", "FAILED", "HELD", "LOST", "DaskExecutor", "Executor", "LocalExecutor",
           "PopulationExecutor", "SlurmExecutor", "Unit", "add_arguments", "chosen", "gpu_ids", "register",
           "run_group", "run_unit"]
