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
Metrics: train_loss, val_loss, val_acc, expected_density per evaluation. Artifact: ``scores.pt``.
"""

from __future__ import annotations

import io

import torch

from analysis.conditions import condition_hash
from experiments.base import ArtifactWriter, TicketlabExperiment, add_paper_configs
from experiments.ingredients import arch as arch_ing
from experiments.ingredients import data as data_ing
from experiments.ingredients import training as training_ing
from experiments.errors import ConfigError
from experiments.ingredients.supermask import supermask_ingredient
from masking import hashing, models, rng, start_mask
from masking import supermask as supermask_lib

ex = TicketlabExperiment("supermask", ingredients=[
    arch_ing.arch_ingredient, data_ing.data_ingredient, supermask_ingredient, training_ing.training_ingredient,
])


@ex.config
def config():
    save_artifacts = True  # store the final scores as an artifact


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


def lottery_mask(run, run_id: int, round_: int) -> dict:
    """The mask of round ``round_`` of lottery run ``run_id``, from the run database this run is observed in."""
    observers = [o for o in run.observers if hasattr(o, "fs") and hasattr(o, "runs")]
    if not observers:
        raise ConfigError("supermask.start=run reads the lottery run from the run database: give one with -m")
    doc = observers[0].runs.find_one({"_id": run_id}, {"artifacts": 1, "experiment.name": 1, "status": 1})
    name = f"round_{round_:02d}.pt"
    found = [a for a in (doc or {}).get("artifacts", []) if a["name"] == name]
    if not found:
        raise ConfigError(f"supermask.start_run={run_id} supermask.start_round={round_}: no artifact {name} in "
                          f"that run of the run database (a lottery run saved with save_artifacts=True?)")
    with observers[0].fs.get(found[0]["file_id"]) as f:
        return torch.load(io.BytesIO(f.read()), map_location="cpu")["mask"]


@supermask_ingredient.capture
def start_scores(net, run, seed, data, start, start_run, start_round, start_criterion, start_percent,
                 start_iterations, p_keep, p_drop, training, arch_name) -> dict | None:
    """Set the scores' start from a mask (``supermask.start``); returns that mask (None from scratch)."""
    if start == "scratch":
        return None
    if start == "run":
        mask = lottery_mask(run, start_run, start_round)
    else:
        init, final = start_mask.dense_trajectory(
            arch_name, seed, data, start_iterations or training["iterations"], models.spec(arch_name).lr,
            training["batch_size"], training["eval_every"], rng.stream(seed, "start data order"))
        mask = start_mask.one_shot_mask(start_criterion, init, final, sorted(net.layer_roles()), start_percent,
                                        rng.stream(seed, "start mask"))
    supermask_lib.scores_from_mask(net, mask, p_keep, p_drop)
    return mask


@ex.main
def main(seed, supermask: dict, save_artifacts, _run, _config):
    training_ing.cpu_settings()
    data = data_ing.load()
    net = arch_ing.build(seed=seed, kind="supermask", input_shape=data.input_shape, num_classes=data.num_classes,
                         score_init=supermask["score_init"], rescale=supermask["rescale"])
    init_hash = hashing.state_hash(models.weight_state(net))
    start = start_scores(net, _run, seed, data, training=_config["training"], arch_name=_config["arch"]["name"])
    if supermask["signed_constant"]:
        supermask_lib.set_signed_constant(net)
    supermask_lib.set_generator(net, rng.stream(seed, "mask samples"))
    samples = supermask["eval_samples"]
    evaluate = lambda: supermask_lib.evaluate(net, *data.test, samples=samples,  # noqa: E731
                                              generator=rng.stream(seed, "evaluation"))
    untrained_mean, _ = evaluate()

    def log_point(point):
        for key in ("train_loss", "val_loss", "val_acc"):
            _run.log_scalar(key, point[key], point["iteration"])
        _run.log_scalar("expected_density", supermask_lib.expected_density(net), point["iteration"])

    result = training_ing.fit(net, training_ing.make_optimizer(net), data, rng.stream(seed, "data order"),
                              on_eval=log_point)
    final_mean, final_std = evaluate()
    final = {"final_test_acc_mean": final_mean, "final_test_acc_std": final_std,
             "final_expected_density": supermask_lib.expected_density(net),
             "final_hash": hashing.state_hash(net.state_dict())}
    net.load_state_dict(result.best_state)
    mean, std = evaluate()
    questions = {}
    if start is not None:
        questions.update({f"start_{k}" if k != "start_density" else k: v
                          for k, v in supermask_lib.mask_change(start, net).items()})
    if supermask["sign_draws"]:
        questions.update(supermask_lib.sign_variants(net, *data.test, samples=samples, draws=supermask["sign_draws"],
                                                     generator=rng.stream(seed, "sign variants")))
    _run.info.update({
        "condition_hash": condition_hash(_config), "data_source": data.source, "init_hash": init_hash,
        "test_acc_mean": mean, "test_acc_std": std, "expected_density": supermask_lib.expected_density(net),
        "early_stop_iteration": result.best_iteration, "val_acc": result.best_val_acc,
        "untrained_test_acc_mean": untrained_mean, "eval_samples": samples, "train_seconds": result.seconds, **final,
        **questions,
    })
    if save_artifacts:
        artifacts = ArtifactWriter(_run)
        artifacts.save("scores.pt", {name: layer.scores.detach().clone()
                                     for name, layer in supermask_lib.supermask_layers(net).items()})
        artifacts.close()
    print(f"supermask: test acc {mean:.4f} +- {std:.4f} over {samples} masks (early stop at "
          f"{result.best_iteration}), expected density {_run.info['expected_density']:.3f}, untrained "
          f"{untrained_mean:.4f}, {1000 * result.seconds / _config['training']['iterations']:.2f} s/1k it")
    return mean


if __name__ == "__main__":
    ex.run_commandline()
