"""The learned-Supermask procedure as a library: train one score per frozen weight, evaluate over mask samples.

    spec = SupermaskSpec("lenet300_100", seed=1, training=TrainingConfig(iterations=2000, lr=0.1))
    result = supermask_training.run(spec, data)
    print(result.record.test_acc_mean, result.record.expected_density)

The net is built from the seed (the same initial weights as a lottery run of that seed; ``signed_constant``
replaces them by std * sign), masks are sampled from ``rng.stream(seed, "mask samples")`` while training, batches
follow ``rng.stream(seed, "data order")``, and every test evaluation draws its ``eval_samples`` masks from a fresh
``rng.stream(seed, "evaluation")``. Early stopping keeps the scores of minimum validation loss.

On CUDA the training-time mask samples (one per weight per step) come from a CUDA generator seeded like the CPU
stream (drawing them on the CPU and copying would cost more than the step): a CUDA run samples other masks than a
CPU run of the seed. Initial weights, batch order and the evaluation masks' draws are the CPU streams everywhere.

Two of the rebuttal's open questions: ``start_mask`` starts the scores from a mask (logit(p_keep) where it keeps a
weight, logit(p_drop) where it prunes it) and the record says how far the learned mask moved from it (start_*);
``sign_draws`` > 0 evaluates the learned mask over the same weights with random signs (``sign_draws`` draws from
``rng.stream(seed, "sign variants")``), flipped signs and signed constants (random_signs_acc_*, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import torch

from masking import hashing, models, rng
from masking import supermask as layers
from masking.training import DataSplits, Placed, TrainingConfig, data_shape, fit_config, place
from ticketlab.params import FLAG, number, param
from ticketlab.schema import SupermaskRecord


@dataclasses.dataclass(frozen=True)
class SupermaskSpec:
    """Everything that defines a learned-Supermask run's results."""

    arch: str
    seed: int
    training: TrainingConfig
    signed_constant: bool = param(False, "train the mask over signed-constant weights (std * sign(w_init)) instead "
                                  "of w_init", FLAG)
    rescale: bool = param(False, "dynamic weight rescaling: scale each layer by size / ones in the sampled mask, every "
                          "pass", FLAG)
    score_init: float = param(0.0, "initial score of every weight (0: keep probability sigmoid(0) = 0.5)", number())
    eval_samples: int = param(10, "test accuracy is the mean over this many mask samples (accuracies averaged)",
                              number(low=1, integer=True))
    start_mask: Mapping[str, torch.Tensor] | None = None  # start the scores from this mask (by weight name)
    p_keep: float = param(0.9, "start keep probability of the weights the start mask keeps (scores = logit(p); "
                          "supermask.start = run or criterion)",
                          number(low=0, high=1, low_open=True, high_open=True))
    p_drop: float = param(0.1, "start keep probability of the weights the start mask prunes (start = run or "
                          "criterion)",
                          number(low=0, high=1, low_open=True, high_open=True))
    # the library's default: none (callers opt in); an experiment's: 5
    sign_draws: int = param(0, "after training, accuracy with random signs over this many sign draws (also flipped "
                            "signs and signed constants; each over eval_samples masks); 0: skip",
                            number(low=0, integer=True), config=5)


@dataclasses.dataclass
class SupermaskResult:
    record: SupermaskRecord
    scores: dict[str, torch.Tensor]  # each layer's scores at the early-stopping point
    curve: list[dict[str, float]]  # per evaluation: iteration, train_loss, val_loss, val_acc, expected_density


def build(spec: SupermaskSpec, data: Placed, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32) -> tuple[models.Net, str]:
    """The seeded Supermask net for ``data`` (mask samples drawn from the seed's stream) and its init hash."""
    input_shape, num_classes = data_shape(data)
    net = models.build(spec.arch, seed=spec.seed, kind="supermask", input_shape=input_shape,
                       num_classes=num_classes, score_init=spec.score_init, rescale=spec.rescale)
    net.to(device=device, dtype=dtype)
    init_hash = hashing.state_hash(models.weight_state(net))
    if spec.start_mask is not None:
        layers.scores_from_mask(net, spec.start_mask, spec.p_keep, spec.p_drop)
    if spec.signed_constant:
        layers.set_signed_constant(net)
    sampler_device = torch.device(device) if torch.device(device).type == "cuda" else "cpu"
    layers.set_generator(net, rng.seeded(rng.derive(spec.seed, "mask samples"), sampler_device))
    return net, init_hash


def evaluate(net: models.Net, spec: SupermaskSpec, test: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """(mean, std) test accuracy over ``spec.eval_samples`` masks from a fresh evaluation stream."""
    return layers.evaluate(net, *test, samples=spec.eval_samples, generator=rng.stream(spec.seed, "evaluation"))


def run(spec: SupermaskSpec, data: DataSplits, on_eval: Callable[[dict[str, float]], None] | None = None,
        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
        on_progress: Callable[[int], None] | None = None, graphs: str = "auto") -> SupermaskResult:
    """Train and evaluate one learned Supermask; ``on_eval(point)`` at every evaluation point,
    ``on_progress(iteration)`` every few steps; ``graphs``: the ``training.graphs`` setting."""
    models.spec(spec.arch)
    placed = place(data, device, dtype)
    net, init_hash = build(spec, placed, device, dtype)
    untrained_mean, _ = evaluate(net, spec, placed.test)

    def point_with_density(point):
        point["expected_density"] = layers.expected_density(net)
        if on_eval is not None:
            on_eval(point)

    fit = fit_config(net, placed, spec.training, rng.stream(spec.seed, "data order"), point_with_density,
                     on_progress, graphs)
    return finish(net, spec, placed.test, fit, init_hash, untrained_mean)


def finish(net: models.Net, spec: SupermaskSpec, test: tuple[torch.Tensor, torch.Tensor], fit, init_hash: str,
           untrained_mean: float) -> SupermaskResult:
    """Evaluate a trained Supermask (``net`` as training left it) at the end and at the early-stopping point."""
    final_mean, final_std = evaluate(net, spec, test)
    final_density, final_hash = layers.expected_density(net), hashing.state_hash(net.state_dict())
    net.load_state_dict(fit.best_state)
    scores = {name: layer.scores.detach().clone() for name, layer in layers.supermask_layers(net).items()}
    mean, std = evaluate(net, spec, test)
    questions = {}
    if spec.start_mask is not None:
        questions.update({k if k == "start_density" else f"start_{k}": v
                          for k, v in layers.mask_change(spec.start_mask, net).items()})
    if spec.sign_draws:
        questions.update(layers.sign_variants(net, *test, samples=spec.eval_samples, draws=spec.sign_draws,
                                              generator=rng.stream(spec.seed, "sign variants")))
    record = SupermaskRecord(
        init_hash=init_hash, test_acc_mean=mean, test_acc_std=std, expected_density=layers.expected_density(net),
        early_stop_iteration=fit.best_iteration, val_acc=fit.best_val_acc, untrained_test_acc_mean=untrained_mean,
        eval_samples=spec.eval_samples, train_seconds=fit.seconds, final_test_acc_mean=final_mean,
        final_test_acc_std=final_std, final_expected_density=final_density, final_hash=final_hash, **questions)
    return SupermaskResult(record, scores, fit.curve)
