"""The procedures for populations: K lottery runs (or K learned Supermasks) that share what shapes the
computation, trained in lockstep (``masking.population``), each still its own run.

    setups = [lottery.setup(spec, data) for spec in specs]       # specs differ in seed, criterion, treatments
    for results in population_procedures.lottery_rounds(setups):  # one list per round, one entry per member
        for member, result in enumerate(results): ...            # a RoundResult, a MemberFailed, or None
    results = population_procedures.supermasks(specs, data)       # specs differ in seed and Supermask settings

Members may differ in ``seed``, ``criterion``, ``mask1``, ``mask0`` and ``sources``; everything else in their
``LotterySpec`` (arch, training, rounds, prune rates) and their data must be the same (``check_compatible``).
Each round runs ``masking.lottery``'s own steps per member, with the member's own random streams (``next_mask``,
``treat``, the untrained test accuracy), trains all live members at once with ``masking.population`` (each member
on its own data order, ``rng.stream(seed, "data order")``), then evaluates and records per member
(``evaluate_round``, ``make_record``): the records are those of the member's single run, computed side by side
(equal to rounding in float64; see ``masking.population``). A member whose loss goes non-finite yields a
``MemberFailed`` in that round and ``None`` after; the others go on.

Learned Supermasks (``supermasks``) may differ in seed, ``signed_constant``, ``rescale``, ``score_init`` and
``eval_samples`` and share arch and training: each member is built and evaluated by ``masking.supermask_training``
(``build``, ``evaluate``, ``finish``) and samples its training masks from its own stream.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import torch

from masking import hashing, lottery, models, population, rng, supermask_training
from masking.evaluation import evaluate
from masking.population import MemberFailed
from masking.training import DataSplits, place, use_graphs

OnEval = Callable[[int, int, dict[str, float]], None]  # (member, round, evaluation point)

# what members of one population may differ in: everything else in their specs must be equal
MEMBER_FIELDS = ("seed", "criterion", "mask1", "mask0", "sources")
SUPERMASK_MEMBER_FIELDS = ("seed", "signed_constant", "rescale", "score_init", "eval_samples")


def shared_part(spec, member_fields: Sequence[str] = MEMBER_FIELDS) -> dict:
    """The fields of ``spec`` that members of one population share."""
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.name not in member_fields}


def _check_specs(specs: Sequence, member_fields: Sequence[str]) -> None:
    if not specs:
        raise ValueError("a population needs at least one member")
    reference = shared_part(specs[0], member_fields)
    for i, spec in enumerate(specs[1:], 1):
        for key, value in shared_part(spec, member_fields).items():
            if value != reference[key]:
                raise ValueError(f"member {i} cannot share a population with member 0: {key} is {value!r}, "
                                 f"not {reference[key]!r}")


def check_compatible(setups: Sequence[lottery.Setup]) -> None:
    """A ValueError naming the first difference unless every member shares the first one's arch, training,
    rounds, prune rates, data and dtype."""
    _check_specs([setup.spec for setup in setups], MEMBER_FIELDS)
    first = setups[0]
    for i, setup in enumerate(setups[1:], 1):
        if setup.data.train[0] is not first.data.train[0] and not all(
                a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all())
                for split, other in zip((setup.data.train, setup.data.val, setup.data.test),
                                        (first.data.train, first.data.val, first.data.test))
                for a, b in zip(split, other)):
            raise ValueError(f"member {i} cannot share a population with member 0: it trains on other data")
        if setup.init_state[next(iter(setup.rates))].dtype != first.init_state[next(iter(first.rates))].dtype:
            raise ValueError(f"member {i} cannot share a population with member 0: another dtype")


def lottery_rounds(setups: Sequence[lottery.Setup], on_eval: OnEval | None = None,
                   start: Sequence[lottery.Checkpoint] | None = None,
                   ) -> Iterator[list[lottery.RoundResult | MemberFailed | None]]:
    """Rounds 0..rounds of every member, or those after ``start`` (one finished round's checkpoint per member, as
    ``lottery.iterate_rounds`` takes one), one list per round (member order): ``lottery.run_round``'s result for
    each live member, a ``MemberFailed`` for a member that failed in the round, ``None`` for one that failed
    before. ``on_eval(member, round, point)`` is called at every evaluation point of every live member. The
    steps run as CUDA graphs per the setups' ``graphs`` setting (``training.use_graphs``)."""
    check_compatible(setups)
    spec, data = setups[0].spec, setups[0].data
    config = spec.training
    graphs = use_graphs(setups[0].graphs, setups[0].device, config.optimizer)
    previous: list[lottery.Checkpoint | None] = [None] * len(setups)
    first = 0
    if start is not None:
        if len(start) != len(setups) or len({c.round for c in start}) != 1:
            raise ValueError("a population continues from one finished round of every member")
        previous, first = [c.to(setups[0].device) for c in start], start[0].round + 1
    live = list(range(len(setups)))
    for k in range(first, spec.rounds + 1):
        results: list = [None] * len(setups)
        masks, start_hashes, untrained = {}, {}, {}
        for m in live:  # each member's own prune and treatments, with its own streams
            setup = setups[m]
            masks[m] = lottery.first_mask(setup) if k == 0 else lottery.next_mask(setup, k, previous[m])
            lottery.treat(setup, k, masks[m], previous[m])
            start_hashes[m] = hashing.state_hash(models.weight_state(setup.net))
            untrained[m] = evaluate(setup.net, *data.test)[1]
        stack = population.Stack([setups[m].net for m in live])
        optimizer = population.make_optimizer(stack, config.optimizer, config.lr, graphs)
        callback = None if on_eval is None else (lambda i, point: on_eval(live[i], k, point))
        fits = population.fit(stack, optimizer, data.train, data.val, config.iterations, config.batch_size,
                              config.eval_every, [rng.stream(setups[m].spec.seed, "data order") for m in live],
                              callback, graphs)
        for i, m in enumerate(live):
            fit = fits[i]
            if isinstance(fit, MemberFailed):
                results[m] = MemberFailed(f"round {k}: {fit}".replace(f"member {i}:", f"member {m}:"))
                continue
            setup = setups[m]
            setup.net.load_state_dict(stack.member_state(i))
            evaluation = lottery.evaluate_round(setup.net, data.test, fit)
            record = lottery.make_record(setup, k, masks[m], start_hashes[m], untrained[m], fit, evaluation,
                                         lottery.source_steps(setup, previous[m]))
            results[m] = lottery.RoundResult(record, evaluation.final, evaluation.best, masks[m], fit.curve)
            previous[m] = results[m].checkpoint
        live = [m for m in live if not isinstance(results[m], MemberFailed)]
        yield results
        if not live:
            return


def supermasks(specs: Sequence[supermask_training.SupermaskSpec], data: DataSplits,
               on_eval: Callable[[int, dict[str, float]], None] | None = None, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32,
               graphs: str = "auto") -> list[supermask_training.SupermaskResult | MemberFailed]:
    """``supermask_training.run`` for every spec, trained in lockstep; one result (or ``MemberFailed``) per spec.
    ``on_eval(member, point)`` at every evaluation point (``point`` has ``expected_density``, as in a single run);
    ``graphs``: the ``training.graphs`` setting."""
    _check_specs(specs, SUPERMASK_MEMBER_FIELDS)
    placed = place(data, device, dtype)
    built = [supermask_training.build(spec, placed, device, dtype) for spec in specs]
    untrained = [supermask_training.evaluate(net, spec, placed.test)[0] for (net, _), spec in zip(built, specs)]
    stack = population.Stack([net for net, _ in built])
    config = specs[0].training
    densities: dict = {}  # every member's expected density at the last evaluation point: one read per point

    def with_density(member, point):
        if densities.get("iteration") != point["iteration"]:
            densities.update(iteration=point["iteration"], values=stack.expected_densities())
        point["expected_density"] = densities["values"][member]
        if on_eval is not None:
            on_eval(member, point)

    graphed = use_graphs(graphs, placed.train[0].device, config.optimizer)
    fits = population.fit(stack, population.make_optimizer(stack, config.optimizer, config.lr, graphed),
                          placed.train, placed.val, config.iterations, config.batch_size, config.eval_every,
                          [rng.stream(spec.seed, "data order") for spec in specs], with_density, graphed)
    results = []
    for member, (spec, (net, init_hash), fit) in enumerate(zip(specs, built, fits)):
        if isinstance(fit, MemberFailed):
            results.append(fit)
            continue
        net.load_state_dict(stack.member_state(member))
        results.append(supermask_training.finish(net, spec, placed.test, fit, init_hash, untrained[member]))
    return results
