"""Iterative pruning with a mask criterion and mask-1/mask-0 treatments: the paper's lottery-ticket experiments.

    python -m experiments.lottery with arch.name=lenet300_100 data.name=fashion_mnist criterion.name=large_final \\
        treatment.mask1=signed_constant treatment.mask0=zero pruning.rounds=5 seed=3 -m 127.0.0.1:27017:lottery
    python -m experiments.lottery print_config with paper_conv4
    python -m experiments.lottery with fast data.name=synthetic        # seconds

Round 0 trains the dense net from its seeded initialization. Round k computes the mask from (w_init, w_final of
round k-1) with the criterion, rewinds every tensor to w_init, applies the mask-1 action to the kept weights and the
mask-0 action to the pruned ones, and retrains. Before training, each round measures the test accuracy of its
untrained start weights (the paper's untrained Supermask). Early stopping picks the iteration of minimum
validation loss; the test set is evaluated once at that iteration and once at the end.

The run record (``info.rounds``, one entry per round) is a contract the analysis reads:
round, percent_remaining, init_hash, start_hash, final_hash, mask_hash, val_loss, val_acc, test_loss, test_acc,
early_stop_iteration, final_test_acc, final_val_acc, untrained_test_acc, train_seconds, mask_source (which two
weight states of the previous round the criterion scored: ``criterion.source``; ``none`` in round 0) and
source_init_iteration and source_final_iteration (the training steps of those two states; 0 is the
initialization), tie_breaks (per layer, the kept weights chosen by random tie-breaking). Hashes are
``masking.hashing.state_hash`` of the weights and biases (init: the seed's initialization, the same for every
criterion and treatment; start: after the treatments; final: end of training) and of the mask.
Metrics: ``train_loss``, ``val_loss``, ``val_acc`` at global step (round * iterations + iteration), and per round
``round.test_acc``, ``round.untrained_test_acc`` (``schema.ROUND_METRICS``; step: (round + 1) * iterations).
``info.execution``: where the run executed (device, device_name, torch, cuda, threads, deterministic, and the
``training.device`` asked for); not part of the condition, so CPU and GPU runs of one condition compare as seeds.
Artifacts: ``init.pt`` (initial weights and biases) and ``round_XX.pt`` ({"final": weights and biases at the end
of training, "mask": the round's mask}, plus the states the criterion source needs: "best", the weights at the
early-stopping point, and "at", the weights after ``criterion.source_iteration`` steps).

A run that died (killed, machine lost) continues from its last finished round into the same run document:
``python -m experiments.lottery -m HOST:PORT:DB --resume RUN_ID`` (see ``experiments.resume``); the rounds it then
trains are bit-identical to an uninterrupted run's on the CPU. SIGTERM and Ctrl-C leave the run INTERRUPTED.
On a terminal, a status line (round, step, ms/step, ETA of the round and the run) is redrawn on stderr; it is not
part of the captured output stored with the run (``experiments.progress``).
The procedure itself is ``masking.lottery`` (usable without Sacred); this script configures and records it.
"""

from __future__ import annotations

import datetime

from experiments import resume
from experiments.errors import ConfigError, RunFailed, run_name
from experiments.base import ArtifactWriter, TicketlabExperiment, add_paper_configs, identity_info, store_now
from experiments.ingredients import arch as arch_ing
from experiments.ingredients import declare, declared_of
from experiments.ingredients import data as data_ing
from experiments.ingredients import training as training_ing
from experiments.ingredients.criterion import criterion_ingredient, role_rates
from experiments.ingredients.pruning import pruning_ingredient
from experiments.ingredients.treatment import treatment_ingredient
from experiments.progress import Progress
from masking import hashing, lottery, models, population_procedures
from masking.population import MemberFailed
from masking.pruning import Mask
from masking.training import Diverged, TrainingConfig, eval_points
from ticketlab import schema
from ticketlab.params import FLAG, Param, field_values

ex = TicketlabExperiment("lottery", ingredients=[
    arch_ing.arch_ingredient, data_ing.data_ingredient, training_ing.training_ingredient, criterion_ingredient,
    treatment_ingredient, pruning_ingredient,
])


declare(ex, [Param("save_artifacts", True, "store each round's final weights and mask (and the initial weights) as "
                   "artifacts", FLAG)])


@ex.named_config
def fast():
    # Seconds per run, for smoke tests: 100 steps per round, 2 pruning rounds, a small validation set.
    training = {"iterations": 100, "eval_every": 25}
    pruning = {"rounds": 2}
    data = {"val_size": 1000, "synthetic_train": 3000}


@ex.named_config
def reduced():
    # A CPU-sized study, under a minute per run on one core (41 s on Fashion-MNIST, measured): 4,000 steps per
    # round, 6 pruning rounds (about 26% of fc weights left), evaluated every 200 steps.
    training = {"iterations": 4000, "eval_every": 200}
    pruning = {"rounds": 6}


add_paper_configs(ex, lottery=True)

# a metric series is one MongoDB document (about 44 bytes a point, 16 MB at most): 100k points is about 4.4 MB
MAX_METRIC_POINTS = 100_000


@ex.config_hook
def metric_series_fit(config, command_name, logger):
    """Refuse, before the run, an evaluation cadence whose metric series would not fit one database document."""
    t, rounds = config["training"], config["pruning"]["rounds"]
    iterations = t["iterations"] or models.spec(config["arch"]["name"]).iterations \
        if config["arch"]["name"] in models.names() else t["iterations"]
    if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (iterations, t["eval_every"])) and \
            isinstance(rounds, int) and rounds >= 0:
        points = (rounds + 1) * (iterations // t["eval_every"])
        if points > MAX_METRIC_POINTS:
            least = -(-(rounds + 1) * iterations // MAX_METRIC_POINTS)
            raise ConfigError(f"training.eval_every={t['eval_every']} gives {points:,} points per metric over "
                              f"{rounds + 1} rounds of {iterations} steps; one metric series must stay under "
                              f"{MAX_METRIC_POINTS:,} points (a 16 MB database document): use eval_every >= {least}")
    return {}


# ---------------------------------------------------------------------- what a run records, in one place

EVAL_METRICS = ("train_loss", "val_loss", "val_acc")  # at global step round * iterations + iteration
ROUND_METRICS = schema.ROUND_METRICS  # as round.<name> at the round's last global step, (round + 1) * iterations


def log_eval(_run, k: int, iterations: int, point: dict) -> None:
    for key in EVAL_METRICS:
        _run.log_scalar(key, point[key], k * iterations + point["iteration"])


def record_round(_run, result: lottery.RoundResult, iterations: int, artifacts: ArtifactWriter | None,
                 sources: tuple[str, str] = ("init", "final")) -> None:
    """Store a finished round, now (``store_now``), before its line is printed. The round record goes last: a run
    document that lists round k in ``info.rounds`` also holds its metrics and its artifact, so a resumed run can
    trust it."""
    record = result.record
    for key in ROUND_METRICS:
        _run.log_scalar(f"round.{key}", float(getattr(record, key)), (record.round + 1) * iterations)
    if artifacts:
        artifacts.save(round_artifact(record.round), {
            "final": cpu(result.final), "mask": cpu(result.mask),
            **{name: cpu(state) for name, state in lottery.kept_states(result, sources).items()}})
    _run.info["rounds"].append(record.to_dict())
    store_now(_run)


def round_artifact(k: int) -> str:
    return f"round_{k:02d}.pt"


def round_steps(k: int, training: TrainingConfig) -> dict[str, set[int]]:
    """The metric steps round ``k`` logs, by metric name."""
    steps = {k * training.iterations + it for it in eval_points(training.iterations, training.eval_every)}
    return {**{key: steps for key in EVAL_METRICS},
            **{f"round.{key}": {(k + 1) * training.iterations} for key in ROUND_METRICS}}


def metric_kept(name: str, step: int, rounds_done: int, iterations: int) -> bool:
    """Whether a stored metric value belongs to the first ``rounds_done`` rounds (every metric of round k is at a
    step in (k * iterations, (k + 1) * iterations])."""
    return step <= rounds_done * iterations


def continue_from(stored: resume.Resumed, setup: lottery.Setup, _run) -> lottery.Checkpoint | None:
    """Keep the finished rounds of the stored run (records, metrics, artifacts), drop what an unfinished round
    left, and return the checkpoint to continue from (None: start at round 0). A round is finished when its
    record, its artifact and all its metric steps are stored; a round that is not is trained again."""
    names, stored_steps = set(stored.artifact_names), stored.metric_steps()
    rounds = []
    for k, record in enumerate(_run.info.get("rounds", [])):
        complete = all(steps <= stored_steps.get(name, set())
                       for name, steps in round_steps(k, setup.spec.training).items())
        if record.get("round") != k or round_artifact(k) not in names or not complete:
            break
        rounds.append(record)
    if rounds and rounds[0]["init_hash"] != setup.init_hash:
        raise resume.ResumeError(f"run {stored.run_id} cannot be resumed: this code builds other initial weights "
                                 f"from seed {setup.spec.seed} (init hash {setup.init_hash[:12]}, stored "
                                 f"{rounds[0]['init_hash'][:12]})")
    stored.keep_artifacts({"init.pt"} | {round_artifact(k) for k in range(len(rounds))})
    stored.keep_metrics(lambda name, step: metric_kept(name, step, len(rounds), setup.spec.training.iterations))
    _run.info["rounds"] = rounds
    _run.info.setdefault("resumed", []).append({"after_round": len(rounds) - 1,
                                                "time": datetime.datetime.now(datetime.timezone.utc).isoformat()})
    if not rounds:
        return None
    k, last = len(rounds) - 1, rounds[-1]
    saved = stored.load_artifact(round_artifact(k))
    checkpoint = lottery.Checkpoint(k, saved["final"], Mask(saved["mask"]), saved.get("best"),
                                    last["early_stop_iteration"], saved.get("at"))
    if (hashing.state_hash(checkpoint.final), hashing.state_hash(checkpoint.mask)) != \
            (last["final_hash"], last["mask_hash"]):
        raise resume.ResumeError(f"run {stored.run_id} cannot be resumed: its artifact {round_artifact(k)} does "
                                 f"not match round {k}'s record")
    return checkpoint


def round_line(record, iterations: int) -> str:
    return (f"round {record.round:2d}: {record.percent_remaining:6.2f}% left, test acc {record.test_acc:.4f} "
            f"(early stop at {record.early_stop_iteration}), untrained {record.untrained_test_acc:.4f}, "
            f"{1000 * record.train_seconds / iterations:.2f} s/1k it")


def cpu(tensors):
    """Artifacts hold CPU tensors, so a run trained on a GPU resumes and loads anywhere."""
    return {name: t.cpu() for name, t in tensors.items()}


@ex.capture
def lottery_spec(seed, arch, _config) -> lottery.LotterySpec:
    """The run's procedure, from its config: each declared ``LotterySpec`` parameter from the ingredient that shows
    it (a parameter of its own is its field, named in one of them)."""
    declared = {}
    for ingredient in (criterion_ingredient, treatment_ingredient, pruning_ingredient):
        declared.update(field_values(declared_of(ingredient), _config[ingredient.path], lottery.LotterySpec))
    return lottery.LotterySpec(arch=arch["name"], seed=seed, training=training_ing.training_config(),
                               role_rates=role_rates(), **declared)


def begin_record(_run, setup: lottery.Setup, data_source: str, _config, artifacts: ArtifactWriter | None,
                 execution: dict, stored: resume.Resumed | None = None) -> None:
    """What a run records before its first round (a run of a population too: ``experiments.population``)."""
    _run.info.update({**identity_info(_run, _config, execution, data_source), "data_source": data_source,
                      "init_hash": setup.init_hash, "layer_rates": setup.rates, "schedule": setup.schedule,
                      "rounds": _run.info.get("rounds", []) if stored else [], "execution": execution})
    if artifacts and not (stored and "init.pt" in stored.artifact_names):
        artifacts.save("init.pt", cpu(setup.init_weights))


# ------------------------------------------------------------------- members of a population (experiments.population)


def member_spec() -> lottery.LotterySpec:
    """A member's procedure: that of the run created last (captured functions read its config)."""
    return lottery_spec()


def population_refusal(config: dict) -> str | None:
    """What a population cannot train side by side (the open questions' trajectory sources), or None."""
    if config["criterion"].get("source", "init_final") != "init_final":
        return f"criterion.source={config['criterion']['source']!r}"
    return None


def train_population(members, data, device, dtype, execution: dict, fail, echo) -> None:
    """Train the members' rounds in lockstep (``masking.population_procedures``), each recorded as its single run
    records it; ``fail(member, error)`` closes a member whose loss diverged."""
    graphs = members[0].run.config["training"]["graphs"]
    setups = [lottery.setup(member.spec, data, device, dtype=dtype, graphs=graphs) for member in members]
    for member, setup in zip(members, setups):
        member.artifacts = ArtifactWriter(member.run) if member.run.config["save_artifacts"] else None
        begin_record(member.run, setup, data.source, member.run.config, member.artifacts, execution)
    iterations = members[0].spec.training.iterations

    def on_eval(index, k, point):
        log_eval(members[index].run, k, iterations, point)

    for results in population_procedures.lottery_rounds(setups, on_eval):
        for member, result in zip(members, results):
            if isinstance(result, MemberFailed):
                fail(member, result)
            elif result is not None:
                record_round(member.run, result, iterations, member.artifacts, member.spec.sources)
                member.echo_line(round_line(result.record, iterations), echo)
    for member in members:
        if not member.failed:
            member.run.result = member.run.info["rounds"][-1]["test_acc"]


@ex.main
def main(save_artifacts, _run, _config):
    device, execution = training_ing.execution_settings()
    data = data_ing.load()
    spec = lottery_spec()
    setup = lottery.setup(spec, data, device, dtype=training_ing.dtype(), graphs=training_ing.graphs())
    stored = resume.resumed(_run)
    start = continue_from(stored, setup, _run) if stored else None
    artifacts = ArtifactWriter(_run) if save_artifacts else None
    begin_record(_run, setup, data.source, _config, artifacts, execution, stored)
    store_now(_run)  # its identity and execution in the database from the start (the sweep shows which run)
    iterations = spec.training.iterations
    if stored:
        print(f"resuming run {stored.run_id} " + (f"after round {start.round} (rounds 0-{start.round} kept)"
                                                  if start is not None else "at round 0 (no finished round stored)"))
    progress = Progress(iterations, last_round=spec.rounds, first_round=0 if start is None else start.round + 1)
    try:
        for result in lottery.iterate_rounds(setup, start=start,
                                             on_eval=lambda k, point: log_eval(_run, k, iterations, point),
                                             on_progress=progress.update):
            record_round(_run, result, iterations, artifacts, spec.sources)
            progress.close()
            print(round_line(result.record, iterations))
    except Diverged as error:  # as a population member fails: FAILED, one line
        raise RunFailed(f"{run_name(_run)} FAILED in round {len(_run.info['rounds'])}: {error}") from None
    finally:
        progress.close()
        if artifacts:
            artifacts.close()
    return _run.info["rounds"][-1]["test_acc"]


if __name__ == "__main__":
    ex.run_commandline()
