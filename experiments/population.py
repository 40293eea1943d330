"""Runs of a kind trained together as one population, each stored as its own Sacred run.

    python -m experiments.population -m 127.0.0.1:27017:lottery \\
        --members "criterion.name=large_final,seed=1; criterion.name=random,seed=1; seed=2" \\
        with reduced data.name=fashion_mnist

``--members`` lists the members, separated by ``;``; each is a list of ``with`` arguments (``KEY=VALUE`` or named
configs, separated by ``,`` or spaces) on top of the shared arguments after ``with``. Members may differ in the
config sections their kind's ``member_keys`` name only (``ticketlab.kinds``: lottery runs in ``seed``,
``criterion`` and ``treatment``; ``--experiment supermask``, learned Supermasks, in ``seed`` and ``supermask``);
anything else that differs is reported in one line before any run starts, as is any bad value. The population
trains on one device, the members' shared ``training.device`` (``auto``: the GPU when there is one).

Every member is a run of its kind's experiment in its own right: Sacred creates it from the member's config
(``ex._create_run``, the same observers ``-m`` gives a single run) and it stores exactly what a single run stores
(``info.rounds``, metrics, artifacts, captured output: the experiment's own recording functions), plus
``info.population``: ``{"id", "size", "index", "device"}``. Its events (started, heartbeats, completed, failed) are
driven here, one member at a time, while the kind's module trains all members in lockstep. A member whose loss goes
non-finite is marked FAILED alone; the others finish. Analysis, Omniboard and the sweep's skip-if-done see members as
the single runs they are. ``run_population`` is the same for notebooks and the sweep.

A kind trains in populations when its ``member_keys`` name some sections and its module offers
``member_spec()`` (the procedure of the run created last: captured functions read its config),
``population_refusal(config)`` (what a population cannot train side by side, or None) and
``train_population(members, data, device, dtype, execution, fail, echo)`` (``fail(member, error)`` for a member
whose loss diverged).
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import uuid
from typing import Sequence

import torch
from sacred.arg_parser import get_config_updates
from sacred.utils import SacredError

from experiments.base import ArtifactWriter, kind_module, sigterm_interrupts
from experiments.ingredients import data as data_ing
from masking import population
from masking import training as masking_training
from masking.population import MemberFailed
from ticketlab import kinds
from ticketlab.cli import Parser, add_database
from ticketlab.schema import EXECUTION_KEYS, flatten


class MemberOutput:
    """One member's captured output: Sacred reads it as it reads a run's captured stdout."""

    closed = False

    def __init__(self):
        self._parts: list[str] = []

    def write(self, text: str) -> None:
        self._parts.append(text)

    def get(self) -> str:
        text, self._parts = "".join(self._parts), []
        return text


@dataclasses.dataclass
class Member:
    """One member: its Sacred run (created, not started), its procedure's spec, its output and artifacts."""

    experiment: str  # its kind (``ticketlab.kinds``)
    run: object
    spec: object  # its kind's procedure: lottery.LotterySpec, supermask_training.SupermaskSpec, ...
    output: MemberOutput = dataclasses.field(default_factory=MemberOutput)
    artifacts: ArtifactWriter | None = None
    failed: bool = False  # its loss diverged: its run is closed FAILED, the others go on

    def echo_line(self, line: str, echo) -> None:
        self.output.write(line + "\n")
        echo(f"[member {self.run.info['population']['index']}, run {self.run._id}] {line}")


def parse_members(text: str) -> list[list[str]]:
    """``"a=1,b=2; a=3"`` -> ``[["a=1", "b=2"], ["a=3"]]``; a ValueError on an empty member."""
    members = [[item for item in re.split(r"[,\s]+", part.strip()) if item] for part in text.split(";")]
    if not members or any(not m for m in members):
        raise ValueError(f"--members {text!r}: each member (separated by ';') needs at least one KEY=VALUE")
    return members


CPU_NOTE = ("note: no GPU here; on a CPU a population trains at about the speed of single runs (README, "
            "Populations): it pays off on a GPU")

# execution settings a population shares: it trains on one device, its steps CUDA graphs or not
SHARED_EXECUTION_KEYS = frozenset({"training.device", "training.graphs"})


def member_keys(experiment: str) -> tuple[str, ...]:
    """The config sections members of a population of ``experiment`` may differ in; a ValueError naming the kinds
    that train in populations when it is not one."""
    keys = kinds.get(experiment).member_keys
    if not keys:
        raise ValueError(f"{experiment} runs do not train in populations; valid choices: "
                         f"{', '.join(name for name, kind in kinds.KINDS.items() if kind.member_keys)}")
    return keys


def shared_config(config: dict, experiment: str = "lottery") -> dict:
    """A member's flat config without what members may differ in and without execution settings (but for the
    device: a population trains on one)."""
    keys = member_keys(experiment)
    return {path: value for path, value in flatten(config).items()
            if (path not in EXECUTION_KEYS or path in SHARED_EXECUTION_KEYS) and path.split(".")[0] not in keys}


def first_difference(a: dict, b: dict) -> str | None:
    """``"KEY is A vs B"`` for the first (sorted) key where two flat configs differ, else None."""
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key} is {a.get(key)!r} vs {b.get(key)!r}"
    return None


def create_runs(member_updates: Sequence[Sequence[str]], shared: Sequence[str] = (), db_spec: str | None = None,
                observers: Sequence = (), experiment: str = "lottery") -> list[Member]:
    """One Sacred run of its kind's experiment per member, configured and validated (config hooks run), none
    started; a ValueError when two members cannot share a population."""
    keys, module = member_keys(experiment), kind_module(experiment)
    members: list[Member] = []
    for updates in member_updates:
        config_updates, named_configs = get_config_updates([*shared, *updates])
        run = module.ex._create_run(config_updates=config_updates, named_configs=named_configs,
                                    options={"--mongo_db": db_spec} if db_spec else None)
        run.observers = [*run.observers, *observers]
        if members:
            difference = first_difference(shared_config(members[0].run.config, experiment),
                                          shared_config(run.config, experiment))
            if difference:
                raise ValueError(f"member {len(members)} cannot share a population with member 0 ({difference}); "
                                 f"members may differ in {', '.join(keys)} only")
        unsupported = module.population_refusal(run.config)
        if unsupported:
            raise ValueError(f"member {len(members)}: {unsupported} does not run in a population yet; run it as a "
                             f"single run")
        # captured functions read the config of the run made last: build the member's spec now
        members.append(Member(experiment, run, module.member_spec()))
    return members


def run_population(member_updates: Sequence[Sequence[str]], shared: Sequence[str] = (), db_spec: str | None = None,
                   observers: Sequence = (), experiment: str = "lottery", population_id: str | None = None,
                   echo=print) -> list:
    """Train the members as one population, each recorded as its own run; returns the finished Sacred runs (their
    ``status`` COMPLETED or FAILED, ``_id`` set by the database observer)."""
    return train(create_runs(member_updates, shared, db_spec, observers, experiment), population_id, echo)


def train(members: Sequence[Member], population_id: str | None = None, echo=print) -> list:
    """Start the runs made by ``create_runs`` and train them as one population."""
    config = members[0].run.config["training"]  # members share device and dtype (create_runs checks)
    device, execution = masking_training.prepare_execution(config["threads"], config["device"], config["graphs"])
    dtype = population.dtype_of(config["dtype"])
    # the same data for every member (their data configs are equal), placed on the device once
    loaded = data_ing.load()
    placed = masking_training.place(loaded, device, dtype)
    data = dataclasses.replace(loaded, train=placed.train, val=placed.val, test=placed.test)
    if device.type == "cpu" and len(members) > 1 and not torch.cuda.is_available():
        echo(f"population: {CPU_NOTE}")
    population_id = population_id or uuid.uuid4().hex[:12]
    for index, member in enumerate(members):
        run = member.run
        run.info["population"] = {"id": population_id, "size": len(members), "index": index, "device": str(device)}
        run.observers = sorted(run.observers, key=lambda o: -o.priority)
        run._output_file = member.output
        run._emit_started()
        run._start_heartbeat()

    def fail(member: Member, error: MemberFailed) -> None:
        member.echo_line(f"FAILED: {error}", echo)
        member.failed = True
        _finish(member, error=error)

    try:
        kind_module(members[0].experiment).train_population(members, data, device, dtype, execution, fail, echo)
    except BaseException as error:  # the population itself failed or was interrupted: so does every live member
        for member in members:
            if not member.failed:
                _finish(member, error=error)
        raise
    for member in members:
        if not member.failed:
            _finish(member)
    return [member.run for member in members]


def _finish(member: Member, error: BaseException | None = None) -> None:
    """Close a member's run as Sacred closes a run: COMPLETED with its result, FAILED or INTERRUPTED."""
    run = member.run
    try:
        run._stop_time()
        run._get_captured_output()
        run._stop_heartbeat()
        if error is None:
            run._emit_completed(run.result)
        elif isinstance(error, KeyboardInterrupt):
            run._emit_interrupted("INTERRUPTED")
        else:
            run._emit_failed(type(error), error, error.__traceback__)
        run._warn_about_failed_observers()
        run._wait_for_observers()
    finally:
        if member.artifacts:
            member.artifacts.close()


# ------------------------------------------------------------------------------------ populations in a sweep


def group_key(config: dict, experiment: str = "lottery") -> str:
    """Configs with equal keys can train in one population: equal but for what members may differ in."""
    return json.dumps(shared_config(config, experiment), sort_keys=True, default=str)


def group(configs: Sequence[dict], size: int, experiment: str = "lottery") -> list[list[int]]:
    """Indices of ``configs`` in populations of at most ``size``: configs equal but for what members may differ in
    (their kind's ``member_keys``) share one, in grid order; a point with no partner is a group of one."""
    groups: dict[str, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault(group_key(config, experiment), []).append(index)
    return [members[i:i + size] for members in groups.values() for i in range(0, len(members), size)]


def main(argv=None) -> int:
    parser = Parser(prog="python -m experiments.population", description=__doc__.split("\n\n")[0],
                    epilog="Anything after 'with' applies to every member.")
    add_database(parser, help_text="the run database (each member a run; none: the runs are not stored)")
    parser.add_argument("--members", required=True, help="members separated by ';', each KEY=VALUE,KEY=VALUE")
    parser.add_argument("--experiment", choices=[name for name, kind in kinds.KINDS.items() if kind.member_keys],
                        default="lottery", help="the kind of the members' runs")
    args = parser.parse_with(sys.argv[1:] if argv is None else argv)
    parser.database(args, optional=True)
    try:
        members = create_runs(parse_members(args.members), args.shared, args.mongo_db, experiment=args.experiment)
    except (ValueError, SacredError) as error:  # bad input: one line, nothing started
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        with sigterm_interrupts():  # SIGTERM, like Ctrl-C: every live member is marked INTERRUPTED
            runs = train(members)
    except KeyboardInterrupt:
        print("population: INTERRUPTED; its members are marked INTERRUPTED", file=sys.stderr)
        return 130
    failed = [run for run in runs if run.status != "COMPLETED"]
    print(f"population: {len(runs) - len(failed)} of {len(runs)} members completed "
          f"(runs {', '.join(str(run._id) for run in runs)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
