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
early_stop_iteration, final_test_acc, final_val_acc, untrained_test_acc, train_seconds. Hashes are
``masking.hashing.state_hash`` of the weights and biases (init: the seed's initialization, the same for every
criterion and treatment; start: after the treatments; final: end of training) and of the mask.
Metrics: ``train_loss``, ``val_loss``, ``val_acc`` at global step (round * iterations + iteration), and per round
``round.test_acc``, ``round.untrained_test_acc`` (``schema.ROUND_METRICS``; step: (round + 1) * iterations).
Artifacts: ``init.pt`` (initial weights and biases) and ``round_XX.pt`` ({"final": weights and biases at the end
of training, "mask": the round's mask}).
"""

from __future__ import annotations

from analysis.conditions import condition_hash
from experiments.base import ArtifactWriter, TicketlabExperiment, add_paper_configs
from experiments.ingredients import arch as arch_ing
from experiments.ingredients import data as data_ing
from experiments.ingredients import training as training_ing
from experiments.ingredients.criterion import criterion_ingredient, layer_rates
from experiments.ingredients.pruning import pruning_ingredient
from experiments.ingredients.treatment import treatment_ingredient
from masking import evaluation, hashing, models, rng
from masking.pruning import Mask, apply_ticket, prune, schedule
from ticketlab import schema

ex = TicketlabExperiment("lottery", ingredients=[
    arch_ing.arch_ingredient, data_ing.data_ingredient, training_ing.training_ingredient, criterion_ingredient,
    treatment_ingredient, pruning_ingredient,
])


@ex.config
def config():
    save_artifacts = True  # store each round's final weights and mask (and the initial weights) as artifacts


@ex.named_config
def fast():
    # Seconds per run, for smoke tests: 100 steps per round, 2 pruning rounds, a small validation set.
    training = {"iterations": 100, "eval_every": 25}
    pruning = {"rounds": 2}
    data = {"val_size": 1000, "synthetic_train": 3000}


@ex.named_config
def reduced():
    # A CPU-sized study, a few minutes per run: 4,000 steps per round, 6 pruning rounds (about 26% of fc weights
    # left), evaluated every 200 steps.
    training = {"iterations": 4000, "eval_every": 200}
    pruning = {"rounds": 6}


add_paper_configs(ex, lottery=True)


@ex.main
def main(seed, criterion, treatment, pruning: dict, training: dict, save_artifacts, _run, _config):
    training_ing.cpu_settings()
    data = data_ing.load()
    net = arch_ing.build(seed=seed, kind="masked", input_shape=data.input_shape, num_classes=data.num_classes)
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    init_hash = hashing.state_hash(models.weight_state(net))
    roles = net.layer_roles()
    rates = layer_rates(roles)
    sizes = {name: init_state[name].numel() for name in roles}
    _run.info.update({"condition_hash": condition_hash(_config), "data_source": data.source, "init_hash": init_hash,
                      "layer_rates": rates, "schedule": schedule(sizes, rates, pruning["rounds"]), "rounds": []})
    artifacts = ArtifactWriter(_run) if save_artifacts else None
    if artifacts:
        artifacts.save("init.pt", models.weight_state(net))

    mask, final_state = Mask.ones({name: init_state[name] for name in roles}), None
    iterations = training["iterations"]
    try:
        for k in range(pruning["rounds"] + 1):
            if k > 0:
                mask = prune(criterion["name"], init_state, final_state, mask, rates, rng.stream(seed, "prune", k))
                apply_ticket(net, init_state, final_state, mask, treatment["mask1"], treatment["mask0"],
                             rng.stream(seed, "treatment", k))
            start_hash = hashing.state_hash(models.weight_state(net))
            _, untrained_acc = evaluation.evaluate(net, *data.test)

            def log_point(point, k=k):
                step = k * iterations + point["iteration"]
                for key in ("train_loss", "val_loss", "val_acc"):
                    _run.log_scalar(key, point[key], step)

            optimizer = training_ing.make_optimizer(net)
            result = training_ing.fit(net, optimizer, data, rng.stream(seed, "data order"), on_eval=log_point)
            final_state = {key: v.clone() for key, v in net.state_dict().items()}
            final_weights = models.weight_state(net)
            final_val_loss, final_val_acc = result.curve[-1]["val_loss"], result.curve[-1]["val_acc"]
            _, final_test_acc = evaluation.evaluate(net, *data.test)
            net.load_state_dict(result.best_state)
            test_loss, test_acc = evaluation.evaluate(net, *data.test)
            net.load_state_dict(final_state)

            record = {
                "round": k,
                "percent_remaining": mask.percent_remaining,
                "init_hash": init_hash,
                "start_hash": start_hash,
                "final_hash": hashing.state_hash(final_weights),
                "mask_hash": hashing.state_hash(mask),
                "val_loss": result.best_val_loss,
                "val_acc": result.best_val_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "early_stop_iteration": result.best_iteration,
                "final_val_acc": final_val_acc,
                "final_val_loss": final_val_loss,
                "final_test_acc": final_test_acc,
                "untrained_test_acc": untrained_acc,
                "train_seconds": result.seconds,
            }
            _run.info["rounds"].append(record)
            for key in schema.ROUND_METRICS:
                _run.log_scalar(f"round.{key}", float(record[key]), (k + 1) * iterations)  # the round's last step
            if artifacts:
                artifacts.save(f"round_{k:02d}.pt", {"final": final_weights, "mask": dict(mask)})
            print(f"round {k:2d}: {record['percent_remaining']:6.2f}% left, test acc {test_acc:.4f} "
                  f"(early stop at {result.best_iteration}), untrained {untrained_acc:.4f}, "
                  f"{1000 * result.seconds / iterations:.2f} s/1k it")
    finally:
        if artifacts:
            artifacts.close()
    return _run.info["rounds"][-1]["test_acc"]


if __name__ == "__main__":
    ex.run_commandline()
