"""The lottery-ticket procedure as a library: iterative pruning, rewinding and mask-1/mask-0 treatments, round by
round, with no Sacred and no database.

    spec = LotterySpec("lenet300_100", seed=1, training=TrainingConfig(iterations=1000, lr=1.2e-3), rounds=5)
    setup = lottery.setup(spec, data)              # data: anything with .train/.val/.test (x, y) tensor pairs
    for result in lottery.iterate_rounds(setup):
        print(result.record.round, result.record.test_acc)

Round 0 trains the dense net from its seeded initialization. Round k computes the mask from two states of the
trajectory (``spec.sources``, default the initial weights and round k-1's final weights; ``SOURCES``: init, final,
best = round k-1's early-stopping point, iter = round k-1's weights after ``spec.source_iteration`` steps) with the
criterion,
rewinds every tensor to the initial state, applies the mask-1 action to the kept weights and the mask-0 action to
the pruned ones, measures the untrained test accuracy, trains with early stopping (minimum validation loss) and
evaluates the test set at the early-stopping iteration and at the end.

Random streams (a seed fixes everything, bit for bit on the CPU): ``rng.stream(seed, "prune", k)`` for round k's
tie-breaking, ``rng.stream(seed, "treatment", k)`` for its random treatments, and a fresh
``rng.stream(seed, "data order")`` for each round's batches. So a round depends only on the initial weights and
the previous round's final weights and mask: a ``Checkpoint`` of them is all it takes to continue a run
(``iterate_rounds(setup, start=checkpoint)``) with the same results as an uninterrupted run.

The steps of a round are separate functions (``next_mask``, ``treat``, ``train``, ``evaluate_round``,
``make_record``; ``run_round`` chains them) so other drivers, e.g. an engine training several members in lockstep,
reuse them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Mapping

import torch

from masking import criteria, hashing, models, rng, treatments
from masking.evaluation import evaluate
from masking.pruning import Mask, apply_ticket, layer_rates, prune, schedule
from masking.training import (DataSplits, FitResult, Placed, TrainingConfig, check_graphs, data_shape, eval_points,
                              fit_config, place)
from ticketlab.params import choice, number, param
from ticketlab.registry import Registry
from ticketlab.schema import RoundRecord

OnEval = Callable[[int, dict[str, float]], None]  # (round, evaluation point: iteration, train_loss, val_loss, val_acc)
OnProgress = Callable[[int, int], None]  # (round, iteration): every training.PROGRESS_EVERY steps, for a display


@dataclasses.dataclass(frozen=True)
class LotterySpec:
    """Everything that defines a lottery run's results (its condition and seed)."""

    arch: str  # masking.models name
    seed: int
    training: TrainingConfig
    criterion: str = param("large_final", "mask criterion: which weights a round keeps ({choices}; "
                           "docs/protocol.md)", choice(lambda: criteria.names()), key="name")
    mask1: str = param("original", "kept weights start from: {choices} (original: rewound to their initial values)",
                       choice(lambda: treatments.mask1_names()))
    mask0: str = param("zero", "pruned weights are frozen at: {choices}", choice(lambda: treatments.mask0_names()))
    rounds: int = param(24, "pruning rounds after the dense round 0 (24: about 0.5% of fc weights remain, as in the "
                        "paper)", number(low=0, integer=True))
    role_rates: Mapping[str, float] | None = None  # per-round prune fraction by layer role; None: the arch's
    sources: tuple[str, str] = param(("init", "final"), "the two weight states of the previous round the criterion "
                                     "scores as its init and final weights, <a>_<b> with a, b in init, final, best "
                                     "(minimum validation loss), iter (after source_iteration steps), e.g. init_final "
                                     "(the paper's), init_best, iter_final, init_iter", key="source",
                                     config="init_final",
                                     parse=lambda text: parse_sources(text))
    source_iteration: int | None = param(None, "the step t of the iter state: an evaluation step before a round's "
                                         "last (a multiple of training.eval_every)")


@dataclasses.dataclass
class Checkpoint:
    """What continuing after finished round ``round`` needs (besides the seed's initial weights)."""

    round: int
    final: dict[str, torch.Tensor]  # weights and biases at the end of the round's training
    mask: Mask  # the round's mask
    best: dict[str, torch.Tensor] | None = None  # weights and biases at the early-stopping point (source "best")
    best_iteration: int | None = None
    at: dict[str, torch.Tensor] | None = None  # weights and biases after spec.source_iteration steps (source "iter")

    def to(self, device: str | torch.device) -> "Checkpoint":
        """This checkpoint, every state in it, with its tensors on ``device`` (e.g. one loaded from a CPU artifact
        for a CUDA run)."""
        def move(state):
            return None if state is None else {k: v.to(device) for k, v in state.items()}

        return dataclasses.replace(self, final=move(self.final), mask=Mask(move(self.mask)), best=move(self.best),
                                   at=move(self.at))


@dataclasses.dataclass
class RoundResult:
    """One finished round: the record a run stores, and the tensors a caller may save."""

    record: RoundRecord
    final: dict[str, torch.Tensor]  # weights and biases at the end of training
    best: dict[str, torch.Tensor]  # weights and biases at the early-stopping iteration
    mask: Mask
    curve: list[dict[str, float]]  # one entry per evaluation: iteration, train_loss, val_loss, val_acc
    at: dict[str, torch.Tensor] | None = None  # weights and biases after spec.source_iteration steps, when kept

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.record.round, self.final, self.mask, self.best, self.record.early_stop_iteration,
                          self.at)


@dataclasses.dataclass
class Setup:
    """A lottery run ready to train: its net (at the initial weights), data and derived plan."""

    spec: LotterySpec
    data: Placed
    net: models.Net
    init_state: dict[str, torch.Tensor]  # the whole initial state (weights, biases, mask buffers)
    init_hash: str  # state_hash of the initial weights and biases
    rates: dict[str, float]  # per-weight prune fraction
    schedule: list[float]  # percent of prunable weights left in rounds 0..rounds
    graphs: str = "auto"  # the training.graphs setting: training steps as CUDA graphs on a GPU (training.use_graphs)

    @property
    def device(self) -> torch.device:
        """Where the net, data and masks live."""
        return self.data.train[0].device

    @property
    def init_weights(self) -> dict[str, torch.Tensor]:
        """The initial weights and biases (what ``init_hash`` describes)."""
        return {name: t for name, t in self.init_state.items() if name.endswith((".weight", ".bias"))}


@dataclasses.dataclass(frozen=True)
class Source:
    """A state of the trajectory a criterion may score: the state, and the step of round k-1 it was taken at (0:
    the initialization), from (setup, previous round's checkpoint)."""

    state: Callable[[Setup, Checkpoint], Mapping[str, torch.Tensor] | None]
    step: Callable[[Setup, Checkpoint], int | None]


SOURCES: Registry[Source] = Registry("criterion source")
SOURCES.add("init", Source(lambda setup, previous: setup.init_state, lambda setup, previous: 0))
SOURCES.add("final", Source(lambda setup, previous: previous.final,
                            lambda setup, previous: setup.spec.training.iterations))
SOURCES.add("best", Source(lambda setup, previous: previous.best, lambda setup, previous: previous.best_iteration))
SOURCES.add("iter", Source(lambda setup, previous: previous.at, lambda setup, previous: setup.spec.source_iteration))


def parse_sources(text: str) -> tuple[str, str]:
    """``"init_final"`` as ``("init", "final")``; a ValueError naming the valid choices otherwise."""
    parts = tuple(str(text).split("_"))
    if len(parts) != 2 or not all(part in SOURCES for part in parts):
        raise ValueError(f"unknown criterion source {text!r}; valid choices: <a>_<b> with a and b in "
                         f"{', '.join(SOURCES.names())} (e.g. init_final, init_best, iter_final, init_iter)")
    return parts


def check_source_iteration(sources: tuple[str, str], t: int | None, training: TrainingConfig) -> None:
    """With the ``iter`` source, the step ``t`` must be an evaluation step before a round's last."""
    if "iter" not in sources:
        return
    if isinstance(t, bool) or not isinstance(t, int) or t not in eval_points(training.iterations,
                                                                                training.eval_every)[:-1]:
        raise ValueError(f"the iter source needs an evaluation step before the last (a multiple of eval_every="
                         f"{training.eval_every} below {training.iterations}), got {t!r}")


def kept_states(result: RoundResult, sources: tuple[str, str]) -> dict[str, dict[str, torch.Tensor]]:
    """The states besides the final weights that ``sources`` need from a round: {"best": ...}, {"at": ...}."""
    return {**({"best": result.best} if "best" in sources else {}), **({"at": result.at} if "iter" in sources else {})}


def validate(spec: LotterySpec) -> None:
    """A ValueError naming the valid choices unless every name in ``spec`` is known."""
    models.spec(spec.arch)
    criteria.get(spec.criterion)
    treatments.validate(mask1=spec.mask1, mask0=spec.mask0)
    for source in spec.sources:
        SOURCES.get(source)
    check_source_iteration(spec.sources, spec.source_iteration, spec.training)
    if isinstance(spec.rounds, bool) or not isinstance(spec.rounds, int) or spec.rounds < 0:
        raise ValueError(f"rounds must be a non-negative integer, got {spec.rounds!r}")


def setup(spec: LotterySpec, data: DataSplits, device: str | torch.device = "cpu",
          dtype: torch.dtype = torch.float32, graphs: str = "auto") -> Setup:
    """Build the seeded masked net for ``data`` on ``device`` in ``dtype`` and plan the rounds (the initial weights
    are drawn on the CPU and moved, so every device starts from the same ones); ``graphs``: the
    ``training.graphs`` setting of its training steps."""
    validate(spec)
    check_graphs(graphs)
    placed = place(data, device, dtype)
    input_shape, num_classes = data_shape(placed)
    net = models.build(spec.arch, seed=spec.seed, kind="masked", input_shape=input_shape, num_classes=num_classes)
    net.to(device=device, dtype=dtype)
    init_state = {k: v.clone() for k, v in net.state_dict().items()}
    roles = net.layer_roles()
    rates = layer_rates(roles, spec.role_rates if spec.role_rates is not None else net.arch.rates)
    sizes = {name: init_state[name].numel() for name in roles}
    return Setup(spec, placed, net, init_state, hashing.state_hash(models.weight_state(net)), rates,
                 schedule(sizes, rates, spec.rounds), graphs)


# ------------------------------------------------------------------------------------------- the steps of a round


def first_mask(setup: Setup) -> Mask:
    """Round 0's mask: every prunable weight kept."""
    return Mask({name: torch.ones_like(setup.init_state[name], dtype=torch.bool) for name in setup.rates},
                tie_breaks={name: 0 for name in setup.rates})


def next_mask(setup: Setup, k: int, previous: Checkpoint) -> Mask:
    """Round ``k``'s mask: the criterion over ``spec.sources`` prunes the alive weights of round k-1's mask."""
    spec = setup.spec
    w_a, w_b = (SOURCES.get(source).state(setup, previous) for source in spec.sources)
    if w_a is None or w_b is None:
        raise ValueError(f"round {k - 1}'s checkpoint lacks a state the sources {spec.sources} need")
    return prune(spec.criterion, w_a, w_b, previous.mask, setup.rates, rng.stream(spec.seed, "prune", k))


def treat(setup: Setup, k: int, mask: Mask, previous: Checkpoint | None) -> None:
    """Make ``setup.net`` round ``k``'s start: rewind to the initial state, then (k > 0) the mask-1/mask-0 actions
    (mask-0 actions that look at training see round k-1's final weights)."""
    if previous is None:
        setup.net.load_state_dict(setup.init_state)
        return
    spec = setup.spec
    apply_ticket(setup.net, setup.init_state, previous.final, mask, spec.mask1, spec.mask0,
                 rng.stream(spec.seed, "treatment", k))


def train(setup: Setup, k: int, on_eval: OnEval | None = None, on_progress: OnProgress | None = None,
          kept: dict | None = None) -> FitResult:
    """Train ``setup.net`` for one round (a fresh optimizer, the seed's data order); ``on_eval(k, point)`` is called
    at every evaluation point, ``on_progress(k, iteration)`` every few steps. With the ``iter`` source,
    ``kept["at"]`` receives the weights after ``spec.source_iteration`` steps."""
    at = setup.spec.source_iteration if kept is not None and "iter" in setup.spec.sources else None

    def callback(point):
        if point["iteration"] == at:
            kept["at"] = models.weight_state(setup.net)
        if on_eval is not None:
            on_eval(k, point)

    progress = None if on_progress is None else (lambda it: on_progress(k, it))
    return fit_config(setup.net, setup.data, setup.spec.training, rng.stream(setup.spec.seed, "data order"),
                      callback if on_eval is not None or at is not None else None, progress, setup.graphs)


@dataclasses.dataclass
class RoundEvaluation:
    test_loss: float  # at the early-stopping iteration
    test_acc: float
    final_test_acc: float  # at the end of training
    final: dict[str, torch.Tensor]  # weights and biases at the end of training
    best: dict[str, torch.Tensor]  # weights and biases at the early-stopping iteration


def evaluate_round(net: models.Net, test: tuple[torch.Tensor, torch.Tensor], fit: FitResult) -> RoundEvaluation:
    """Test ``net`` (as training left it) at the end and at the early-stopping point; leaves it at the end."""
    final_state = {key: v.clone() for key, v in net.state_dict().items()}
    final = models.weight_state(net)
    _, final_test_acc = evaluate(net, *test)
    net.load_state_dict(fit.best_state)
    best = models.weight_state(net)
    test_loss, test_acc = evaluate(net, *test)
    net.load_state_dict(final_state)
    return RoundEvaluation(test_loss, test_acc, final_test_acc, final, best)


def make_record(setup: Setup, k: int, mask: Mask, start_hash: str, untrained_test_acc: float, fit: FitResult,
                evaluation: RoundEvaluation, source_steps: list[int] | None = None) -> RoundRecord:
    last = fit.curve[-1]
    return RoundRecord(
        round=k, percent_remaining=mask.percent_remaining, init_hash=setup.init_hash, start_hash=start_hash,
        final_hash=hashing.state_hash(evaluation.final), mask_hash=hashing.state_hash(mask),
        val_loss=fit.best_val_loss, val_acc=fit.best_val_acc, test_loss=evaluation.test_loss,
        test_acc=evaluation.test_acc, early_stop_iteration=fit.best_iteration, final_val_acc=last["val_acc"],
        final_val_loss=last["val_loss"], final_test_acc=evaluation.final_test_acc,
        untrained_test_acc=untrained_test_acc, train_seconds=fit.seconds,
        mask_source="_".join(setup.spec.sources) if k > 0 else "none",
        source_init_iteration=source_steps[0] if source_steps else None,
        source_final_iteration=source_steps[1] if source_steps else None,
        tie_breaks=None if mask.tie_breaks is None else dict(sorted(mask.tie_breaks.items())))


def source_steps(setup: Setup, previous: Checkpoint | None) -> list[int] | None:
    """The training steps of round k-1 at which the criterion's two states were taken (None in round 0)."""
    return None if previous is None else [SOURCES.get(s).step(setup, previous) for s in setup.spec.sources]


def run_round(setup: Setup, k: int, previous: Checkpoint | None, on_eval: OnEval | None = None,
              on_progress: OnProgress | None = None) -> RoundResult:
    """Round ``k`` from the previous round's checkpoint (None for round 0): prune, treat, measure, train, test."""
    if (k == 0) != (previous is None) or (previous is not None and previous.round != k - 1):
        raise ValueError(f"round {k} continues from round {k - 1}, got "
                         f"{'no checkpoint' if previous is None else f'round {previous.round}'}")
    mask = first_mask(setup) if previous is None else next_mask(setup, k, previous)
    treat(setup, k, mask, previous)
    start_hash = hashing.state_hash(models.weight_state(setup.net))
    _, untrained_test_acc = evaluate(setup.net, *setup.data.test)
    kept: dict = {}
    fit = train(setup, k, on_eval, on_progress, kept)
    evaluation = evaluate_round(setup.net, setup.data.test, fit)
    record = make_record(setup, k, mask, start_hash, untrained_test_acc, fit, evaluation,
                         source_steps(setup, previous))
    return RoundResult(record, evaluation.final, evaluation.best, mask, fit.curve, kept.get("at"))


def iterate_rounds(setup: Setup, start: Checkpoint | None = None, on_eval: OnEval | None = None,
                   on_progress: OnProgress | None = None) -> Iterator[RoundResult]:
    """Rounds 0..spec.rounds, or those after ``start`` (a finished round's checkpoint, moved to the setup's
    device), one result at a time."""
    previous = None if start is None else start.to(setup.device)
    first = 0 if start is None else start.round + 1
    if start is not None and not 0 <= start.round <= setup.spec.rounds:
        raise ValueError(f"cannot continue after round {start.round}: the run has rounds 0..{setup.spec.rounds}")
    for k in range(first, setup.spec.rounds + 1):
        result = run_round(setup, k, previous, on_eval, on_progress)
        yield result
        previous = result.checkpoint
