"""The kinds of experiment, one registration each: what the sweep, the executors, populations, the queries, the run
listings, Omniboard and the report need of a kind, so none of them names one.

A kind is its Sacred experiment (``module``: ``python -m <module>``, whose ``ex`` is a ``TicketlabExperiment`` of
this kind) and its record (``record``: the dataclass of its results, in ``info.rounds`` one per round, or at the top
of ``info``). Everything else derives: the sweep's ``--experiment`` choices and the progress a run counts in (its
rounds, ``rounds``), which shorthand grid flags apply (``axes``), whether a dead run is resumed (``resumable``) and
which config sections members of one population may differ in (``member_keys``; none: no populations), the columns
of ``ticketlab runs`` and the frames of ``analysis`` (``columns``, ``results``), the report's section for it
(``report``: ``analysis.report.SECTIONS``) and its Omniboard tags (``tags``).

A kind of one's own is a module with its Sacred experiment and one ``register(Kind(...))`` (docs/extending.md).
"""

from __future__ import annotations

import dataclasses

from ticketlab import schema
from ticketlab.registry import Registry


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str  # the experiment's name: ``experiment.name`` of its runs, ``--experiment NAME``
    module: str  # the module whose ``ex`` is its Sacred experiment, run as ``python -m <module>``
    record: type  # the dataclass of its results (a field per result; docs/run-record.md)
    per_round: bool = False  # records in ``info.rounds``, one per round (a frame row per round); else in ``info``
    rounds: str | None = None  # the config path of its rounds after round 0 (None: one unit of work per run)
    info: tuple[str, ...] = schema.IDENTITY_INFO  # the other ``info`` keys its runs write
    columns: tuple[str, ...] = ("seed", "arch", "data", "iterations")  # what its run listing shows first
    results: tuple[str, ...] = ()  # record fields its run listing shows (per round: of the last finished round)
    report: str = "summary"  # its section of the report (``analysis.report.SECTIONS``)
    title: str = ""  # the report's heading of its runs (default: the name)
    metric: str = ""  # the record field the summary section compares (mean over seeds per setting)
    metric_label: str = ""  # how the summary names it (default: the field)
    axes: tuple[str, ...] = ()  # the sweep's shorthand grid flags that apply (``schema.SWEEP_AXES``; seeds: all)
    resumable: bool = False  # a dead run continues from its last finished round (``--resume``, the sweep)
    member_keys: tuple[str, ...] = ()  # config sections members of one population may differ in (none: no population)
    tags: tuple = ()  # its Omniboard tag groups (``schema.Tag``)
    net: str = "masked"  # the ``masking.models.build`` kind of its nets (``experiments.population_size`` probes it)

    @property
    def fields(self) -> list[str]:
        """The record's fields, in order."""
        return [f.name for f in dataclasses.fields(self.record)]

    def work(self, config: dict) -> tuple[int, int | None]:
        """Units of progress of one run of ``config``: (its rounds, training steps per round), else (1, None)."""
        if self.rounds is None:
            return 1, None
        section, key = self.rounds.split(".")
        return config[section][key] + 1, config["training"]["iterations"]


KINDS: Registry[Kind] = Registry("experiment")


def register(kind: Kind) -> Kind:
    return KINDS.add(kind.name, kind)


names, get = KINDS.names, KINDS.get

register(Kind("lottery", "experiments.lottery", schema.RoundRecord, per_round=True, rounds="pruning.rounds",
              info=schema.LOTTERY_INFO, columns=schema.LOTTERY_COLUMNS, results=("percent_remaining", "test_acc"),
              report="studies", axes=("criteria", "mask1", "mask0"), resumable=True,
              member_keys=("seed", "criterion", "treatment"), tags=schema.TAG_GROUPS["lottery"]))
register(Kind("supermask", "experiments.supermask", schema.SupermaskRecord, info=schema.SUPERMASK_INFO,
              columns=schema.SUPERMASK_COLUMNS, results=("test_acc_mean", "expected_density"),
              title="Learned Supermasks", metric="test_acc_mean", metric_label="test acc",
              member_keys=("seed", "supermask"), tags=schema.TAG_GROUPS["supermask"], net="supermask"))
