"""Learned Supermasks: weights frozen at initialization, one trainable score per weight.

    python -m experiments.supermask with arch.name=lenet300_100 data.name=fashion_mnist seed=1 \\
        -m 127.0.0.1:27017:lottery
    python -m experiments.supermask with fast data.name=synthetic supermask.signed_constant=True

Every forward pass samples a mask m ~ Bernoulli(sigmoid(score)); the gradient passes straight through the sample.
Early stopping keeps the scores of minimum validation loss; test accuracy is the mean (and std) over
``supermask.eval_samples`` mask samples, each scoring the whole test set.

Run record: ``info`` holds test_acc_mean, test_acc_std, expected_density (mean keep probability), final_*
(the same at the end of training), untrained_test_acc_mean (scores at their initial value), early_stop_iteration,
init_hash (the seed's initialization, as in lottery runs) and final_hash (weights, biases and scores).
Starting from a mask (``supermask.start``: run or criterion; the rebuttal's question 8) adds start_density,
start_hamming, start_hamming_fraction, start_dropped_fraction and start_added_fraction: how far the learned mask
(keep probability above 0.5, at the early-stopping point) moved from the start mask. Sign randomisation (question 7,
``supermask.sign_draws`` > 0) adds random_signs_acc_*, flipped_signs_acc_* and signed_constant_acc_* (mean, std over
all masks and sign draws, std_draws over the draws' means): the learned mask evaluated over the same weights with
random signs, every sign flipped, and std * sign constants.
Metrics: train_loss, val_loss, val_acc, expected_density per evaluation. Artifact: ``scores.pt`` (the scores at
the early-stopping point). ``info.execution``: the device and versions it ran with (as in lottery runs). On a
terminal, a status line shows step, ms/step and ETA (not stored). The procedure itself is
``masking.supermask_training`` (usable without Sacred).
"""

from __future__ import annotations

from experiments.base import ArtifactWriter, TicketlabExperiment, add_paper_configs, identity_info
from experiments.ingredients import arch as arch_ing
from experiments.ingredients import declare
from experiments.ingredients import data as data_ing
from experiments.ingredients import training as training_ing
from experiments.errors import ConfigError, RunFailed, run_name
from experiments.ingredients.supermask import supermask_ingredient
from experiments.progress import Progress
from experiments.resume import load_tensors
from masking import hashing, models, population_procedures, rng, start_mask, supermask_training
from masking.population import MemberFailed
from masking.training import Diverged
from ticketlab import identity
from ticketlab.params import FLAG, Param, field_values, params

ex = TicketlabExperiment("supermask", ingredients=[
    arch_ing.arch_ingredient, data_ing.data_ingredient, supermask_ingredient, training_ing.training_ingredient,
])


declare(ex, [Param("save_artifacts", True, "store the final scores as an artifact", FLAG)])


@ex.named_config
def fast():
    # Seconds per run, for smoke tests.
    training = {"iterations": 100, "eval_every": 25}
    data = {"val_size": 1000, "synthetic_train": 3000}
    supermask = {"eval_samples": 3}


@ex.named_config
def reduced():
    # A CPU-sized run of a few minutes: 5,000 steps.
    training = {"iterations": 5000, "eval_every": 250}


add_paper_configs(ex, lottery=False)


EVAL_METRICS = ("train_loss", "val_loss", "val_acc", "expected_density")  # at step = iteration


def log_eval(_run, point: dict) -> None:
    for key in EVAL_METRICS:
        _run.log_scalar(key, point[key], point["iteration"])


START_RUN_FIELDS = {"experiment.name": 1, "status": 1, "config": 1, "artifacts": 1, "info.rounds.round": 1,
                    "info.rounds.mask_hash": 1, "info.rounds.percent_remaining": 1, "info.science": 1}


def start_run_doc(config: dict, database) -> dict | None:
    """The lottery run ``supermask.start=run`` starts from, checked: a COMPLETED lottery run of the same arch and
    data set that stored the mask of ``start_round`` (a ConfigError in one line otherwise, before the run starts:
    ``ex.checks``). None for other starts."""
    cfg = config["supermask"]
    if cfg["start"] != "run":
        return None
    where = f"supermask.start_run={cfg['start_run']} supermask.start_round={cfg['start_round']}"
    if database is None:
        raise ConfigError(f"{where}: supermask.start=run reads the lottery run from the run database: give one "
                          f"with -m")
    doc = database["runs"].find_one({"_id": cfg["start_run"]}, START_RUN_FIELDS)
    if doc is None or doc.get("experiment", {}).get("name") != "lottery":
        what = "no such run" if doc is None else f"run {cfg['start_run']} is a {doc['experiment']['name']} run"
        raise ConfigError(f"{where}: {what}; give a COMPLETED lottery run of this database")
    if doc.get("status") != "COMPLETED":
        raise ConfigError(f"{where}: run {cfg['start_run']} is {doc.get('status')}, not COMPLETED: its masks may "
                          f"not exist yet or be final")
    for key in ("arch", "data"):
        theirs, ours = doc["config"][key]["name"], config[key]["name"]
        if theirs != ours:
            raise ConfigError(f"{where}: run {cfg['start_run']} pruned {key}.name={theirs!r}, this run has "
                              f"{key}.name={ours!r}; a mask fits only its own {key}")
    rounds = [r["round"] for r in (doc.get("info") or {}).get("rounds") or []]
    name = f"round_{cfg['start_round']:02d}.pt"
    if cfg["start_round"] not in rounds or name not in [a["name"] for a in doc.get("artifacts", [])]:
        raise ConfigError(f"{where}: run {cfg['start_run']} has no round {cfg['start_round']} with a stored mask "
                          f"(rounds {', '.join(map(str, rounds))}; saved with save_artifacts=True?)")
    return doc


ex.checks.append(start_run_doc)


def lottery_mask(run, config: dict) -> tuple[dict, dict]:
    """The mask ``supermask.start=run`` names, from the run database this run is observed in, and what it is
    (``info.start_mask``: the run, its condition, point and science version, the round, the mask's hash)."""
    observers = [o for o in run.observers if hasattr(o, "fs") and hasattr(o, "runs")]
    doc = start_run_doc(config, observers[0].runs.database if observers else None)
    round_ = config["supermask"]["start_round"]
    found = next(a for a in doc["artifacts"] if a["name"] == f"round_{round_:02d}.pt")
    with observers[0].fs.get(found["file_id"]) as f:
        mask = load_tensors(f.read())["mask"]
    record = next(r for r in doc["info"]["rounds"] if r["round"] == round_)
    return mask, {"run": doc["_id"], "condition": identity.condition_hash(doc["config"]),
                  "point": identity.point_hash(doc["config"]), "science": identity.version_of(doc),
                  "round": round_, "percent_remaining": record["percent_remaining"],
                  "mask_hash": hashing.state_hash(mask)}


@supermask_ingredient.capture
def start_mask_of(run, seed, data, start, start_run, start_round, start_criterion, start_percent,
                  start_iterations, training, arch_name, device="cpu") -> dict | None:
    """The mask the scores start from (``supermask.start``; None from scratch); ``criterion`` trains its dense net
    on ``device``, the run's. What the mask is goes into ``info.start_mask`` (None from scratch)."""
    run.info["start_mask"] = None
    if start == "scratch":
        return None
    if start == "run":
        mask, run.info["start_mask"] = lottery_mask(run, run.config)
    else:
        iterations = start_iterations or training["iterations"]
        init, final, names = start_mask.dense_trajectory(
            arch_name, seed, data, iterations, models.spec(arch_name).lr, training["batch_size"],
            training["eval_every"], rng.stream(seed, "start data order"), device=device)
        mask = start_mask.one_shot_mask(start_criterion, init, final, sorted(names), start_percent,
                                        rng.stream(seed, "start mask"))
        run.info["start_mask"] = {"criterion": start_criterion, "percent": start_percent,
                                  "iterations": iterations, "mask_hash": hashing.state_hash(mask)}
    return mask


@ex.capture
def supermask_spec(seed, arch, supermask: dict, start=None) -> supermask_training.SupermaskSpec:
    """The run's procedure, from its config (``start``: the mask the scores start from, ``start_mask_of``)."""
    declared = field_values(params(supermask_training.SupermaskSpec), supermask)
    return supermask_training.SupermaskSpec(arch=arch["name"], seed=seed, training=training_ing.training_config(),
                                            start_mask=start, **declared)


def record_result(_run, result: supermask_training.SupermaskResult, data_source: str, _config,
                  save_artifacts: bool, execution: dict) -> str:
    """Store a finished Supermask run (a member of a population too: ``experiments.population``); returns the
    summary line the run prints."""
    record = result.record
    _run.info.update({**identity_info(_run, _config, execution, data_source), "data_source": data_source,
                      **record.to_dict(), "execution": execution})
    if save_artifacts:
        artifacts = ArtifactWriter(_run)
        artifacts.save("scores.pt", {name: t.cpu() for name, t in result.scores.items()})
        artifacts.close()
    return (f"supermask: test acc {record.test_acc_mean:.4f} +- {record.test_acc_std:.4f} over "
            f"{record.eval_samples} masks (early stop at {record.early_stop_iteration}), expected density "
            f"{record.expected_density:.3f}, untrained {record.untrained_test_acc_mean:.4f}, "
            f"{1000 * record.train_seconds / _config['training']['iterations']:.2f} s/1k it")


# ------------------------------------------------------------------- members of a population (experiments.population)


def member_spec() -> supermask_training.SupermaskSpec:
    """A member's procedure: that of the run created last (captured functions read its config)."""
    return supermask_spec()


def population_refusal(config: dict) -> str | None:
    """What a population cannot train side by side (Supermasks started from a mask), or None."""
    if config["supermask"].get("start", "scratch") != "scratch":
        return f"supermask.start={config['supermask']['start']!r}"
    return None


def train_population(members, data, device, dtype, execution: dict, fail, echo) -> None:
    """Train the members side by side (``masking.population_procedures``), each recorded as its single run records
    it; ``fail(member, error)`` closes a member whose loss diverged."""
    def on_eval(index, point):
        log_eval(members[index].run, point)

    results = population_procedures.supermasks([member.spec for member in members], data, on_eval, device=device,
                                               dtype=dtype, graphs=members[0].run.config["training"]["graphs"])
    for member, result in zip(members, results):
        if isinstance(result, MemberFailed):
            fail(member, result)
            continue
        run = member.run
        run.info["start_mask"] = None  # members start from scratch (population_refusal refuses other starts)
        member.echo_line(record_result(run, result, data.source, run.config, run.config["save_artifacts"],
                                       execution), echo)
        run.result = result.record.test_acc_mean


@ex.main
def main(seed, arch, save_artifacts, _run, _config):
    device, execution = training_ing.execution_settings()
    data = data_ing.load()
    spec = supermask_spec(start=start_mask_of(_run, seed, data, training=_config["training"], arch_name=arch["name"],
                                              device=device))
    progress = Progress(spec.training.iterations, label="")
    try:
        result = supermask_training.run(spec, data, on_eval=lambda point: log_eval(_run, point), device=device,
                                        dtype=training_ing.dtype(), on_progress=lambda it: progress.update(0, it),
                                        graphs=training_ing.graphs())
    except Diverged as error:  # as a population member fails: FAILED, one line
        raise RunFailed(f"{run_name(_run)} FAILED: {error}") from None
    finally:
        progress.close()
    print(record_result(_run, result, data.source, _config, save_artifacts, execution))
    return result.record.test_acc_mean


if __name__ == "__main__":
    ex.run_commandline()
