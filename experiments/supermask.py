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
Metrics: train_loss, val_loss, val_acc, expected_density per evaluation. Artifact: ``scores.pt`` (the scores at
the early-stopping point). ``info.execution``: the device and versions it ran with (as in lottery runs). On a
terminal, a status line shows step, ms/step and ETA (not stored). The procedure itself is
``masking.supermask_training`` (usable without Sacred).
"""

from __future__ import annotations

from analysis.conditions import condition_hash
from experiments.base import ArtifactWriter, TicketlabExperiment, add_paper_configs
from experiments.ingredients import arch as arch_ing
from experiments.ingredients import data as data_ing
from experiments.ingredients import training as training_ing
from experiments.ingredients.supermask import supermask_ingredient
from experiments.progress import Progress
from masking import supermask_training

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


EVAL_METRICS = ("train_loss", "val_loss", "val_acc", "expected_density")  # at step = iteration


def log_eval(_run, point: dict) -> None:
    for key in EVAL_METRICS:
        _run.log_scalar(key, point[key], point["iteration"])


@ex.main
def main(seed, arch, supermask: dict, save_artifacts, _run, _config):
    device, execution = training_ing.execution_settings()
    data = data_ing.load()
    train_config = training_ing.training_config()
    spec = supermask_training.SupermaskSpec(
        arch=arch["name"], seed=seed, training=train_config, signed_constant=supermask["signed_constant"],
        rescale=supermask["rescale"], score_init=supermask["score_init"], eval_samples=supermask["eval_samples"])
    progress = Progress(train_config.iterations, label="")
    try:
        result = supermask_training.run(spec, data, on_eval=lambda point: log_eval(_run, point), device=device,
                                        on_progress=lambda it: progress.update(0, it))
    finally:
        progress.close()
    record = result.record
    _run.info.update({"condition_hash": condition_hash(_config), "data_source": data.source, **record.to_dict(),
                      "execution": execution})
    if save_artifacts:
        artifacts = ArtifactWriter(_run)
        artifacts.save("scores.pt", {name: t.cpu() for name, t in result.scores.items()})
        artifacts.close()
    print(f"supermask: test acc {record.test_acc_mean:.4f} +- {record.test_acc_std:.4f} over "
          f"{record.eval_samples} masks (early stop at {record.early_stop_iteration}), expected density "
          f"{record.expected_density:.3f}, untrained {record.untrained_test_acc_mean:.4f}, "
          f"{1000 * record.train_seconds / train_config.iterations:.2f} s/1k it")
    return record.test_acc_mean


if __name__ == "__main__":
    ex.run_commandline()
