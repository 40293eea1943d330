"""The procedures as a library (masking.lottery, masking.supermask_training): no Sacred, no database; bit-identical
to what the experiments computed before the refactor, and to what the experiments record now."""

from __future__ import annotations

import pytest
import torch

from experiments import datasets
from masking import hashing, lottery, supermask_training
from masking.training import TrainingConfig
from ticketlab.schema import ROUND_FIELDS, SUPERMASK_FIELDS

# REAL OUTPUTS OF THE PRE-LIBRARY CODE: experiments/lottery.py and experiments/supermask.py as they were at commit
# b959fe9 (the round loop inside the Sacred mains), run with `ex.run(named_configs=["fast"])`, data.name=synthetic,
# training.threads=1, training.eval_every=10 (lottery), save_artifacts=False. Hard-coding them is the point: the
# library must reproduce the old code bit for bit on the CPU (same random streams, same order of operations). CPU
# numbers: every run here is pinned to the CPU (the library's default; the experiments' training.device=cpu), also on
# a machine with a GPU.
LOTTERY_REFERENCE = """
# seed criterion mask1 mask0 lr round start final mask test final untr. stop
1 large_final original zero 0.0012 0 b5bc7943c6ed7e03 20a5b02d41261f0a 6cdc891b8d1bfdc1 0.744 0.744 0.086 100
1 large_final original zero 0.0012 1 a81116dd5fce760f 885d401c2a1d4f36 59254199d8c33975 0.83 0.83 0.209 100
1 large_final original zero 0.0012 2 ff121547e8e0b0a9 d822e799e573b12c f83b18e1e579c09b 0.868 0.82 0.271 90
2 random reshuffle random_zero 0.0012 0 961d7301fe30d84b 4018dcecbf916fd9 6cdc891b8d1bfdc1 0.864 0.864 0.082 100
2 random reshuffle random_zero 0.0012 1 b6cbac023eacd446 eac90a8a83c75433 b71c71e7a8cc023b 0.873 0.873 0.137 100
2 random reshuffle random_zero 0.0012 2 5a86432ee8e836b8 217fa9ab774c2dd4 c0fc92741966fb35 0.829 0.829 0.096 100
3 large_init_large_final signed_constant init 0.02 0 86696e1353eeac64 f3b74af5ce6c4c66 6cdc891b8d1bfdc1 0.46 0.46 0.103 100
3 large_init_large_final signed_constant init 0.02 1 66b941aaa5a4e4d7 c22f5fe8665a9ece e814af11ff84a0ce 0.358 0.358 0.099 100
3 large_init_large_final signed_constant init 0.02 2 1e1dcf06515f9496 c9667d9189cf6d4d 645cdf3624cb6baf 0.351 0.351 0.11 100
"""
SUPERMASK_REFERENCE = """
# seed signed init             final            test_mean           test_std             untrained           final_mean          density            stop
1 False b5bc7943c6ed7e03 82248b5a08dcae27 0.2803333333333333 0.1402331392122894 0.09599999999999999 0.2803333333333333 0.5003141157578741 100
2 True  961d7301fe30d84b 05978d5aeb0d0fc5 0.16433333333333333 0.022368132093076826 0.09233333333333334 0.16433333333333333 0.5008745014927246 100
"""


def _rows(table: str) -> list[list[str]]:
    return [line.split() for line in table.strip().splitlines() if not line.startswith("#")]


def _typed(fields: list[str]) -> tuple:
    """Hash prefixes stay strings; accuracies are floats (repr round-trips exactly); iterations ints."""
    return tuple(f if len(f) == 16 and f.isalnum() and not f.isdigit() else (int(f) if f.isdigit() else float(f))
                 for f in fields)


LOTTERY = {}  # (seed, criterion, mask1, mask0, lr) -> per round (start, final, mask hash prefixes, accs, stop)
for _row in _rows(LOTTERY_REFERENCE):
    LOTTERY.setdefault((int(_row[0]), *_row[1:4], float(_row[4])), []).append(_typed(_row[6:]))
SUPERMASK = {(int(r[0]), r[1] == "True"): _typed(r[2:]) for r in _rows(SUPERMASK_REFERENCE)}


@pytest.fixture(scope="module")
def data():
    return datasets.load("synthetic", "/nonexistent", 1000, 0, synthetic_shape="mnist", synthetic_train=3000,
                         synthetic_test=1000)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def lottery_spec(seed, criterion, mask1, mask0, lr):
    return lottery.LotterySpec("lenet300_100", seed, TrainingConfig(iterations=100, lr=lr, eval_every=10),
                               criterion=criterion, mask1=mask1, mask0=mask0, rounds=2)


def summary(record) -> tuple:
    """What the reference tables hold of a round record (a RoundRecord or its stored dict)."""
    r = record if isinstance(record, dict) else record.to_dict()
    return (r["start_hash"][:16], r["final_hash"][:16], r["mask_hash"][:16], r["test_acc"], r["final_test_acc"],
            r["untrained_test_acc"], r["early_stop_iteration"])


def supermask_summary(r: dict) -> tuple:
    return (r["init_hash"][:16], r["final_hash"][:16], r["test_acc_mean"], r["test_acc_std"],
            r["untrained_test_acc_mean"], r["final_test_acc_mean"], r["expected_density"], r["early_stop_iteration"])


@pytest.mark.parametrize("key", list(LOTTERY))
def test_lottery_library_reproduces_the_pre_library_code(data, key):
    points = []
    setup = lottery.setup(lottery_spec(*key), data)
    results = list(lottery.iterate_rounds(setup, on_eval=lambda k, point: points.append((k, point["iteration"]))))
    assert [summary(r.record) for r in results] == LOTTERY[key]
    assert points == [(k, it) for k in range(3) for it in range(10, 101, 10)]
    for r in results:  # the tensors a caller saves are the ones the record describes
        assert hashing.state_hash(r.final) == r.record.final_hash and hashing.state_hash(r.mask) == r.record.mask_hash
        assert [p["iteration"] for p in r.curve][-1] == 100
        assert list(r.record.to_dict()) == ROUND_FIELDS
    assert results[0].record.init_hash == hashing.state_hash(setup.init_weights)


def test_lottery_continues_from_a_checkpoint_as_if_never_stopped(data):
    key = (1, "large_final", "original", "zero", 0.0012)
    first = next(lottery.iterate_rounds(lottery.setup(lottery_spec(*key), data)))
    fresh = lottery.setup(lottery_spec(*key), data)  # a new process would build this from the seed
    checkpoint = lottery.Checkpoint(0, {k: v.clone() for k, v in first.final.items()}, first.mask)
    rest = list(lottery.iterate_rounds(fresh, start=checkpoint))
    assert [summary(r.record) for r in [first, *rest]] == LOTTERY[key]
    with pytest.raises(ValueError, match="round 3 continues from round 2|cannot continue after round 5"):
        list(lottery.iterate_rounds(fresh, start=lottery.Checkpoint(5, first.final, first.mask)))


def test_lottery_steps_compose_like_run_round(data):
    """The per-round steps are public: a driver that calls them one by one gets run_round's result."""
    setup = lottery.setup(lottery_spec(2, "random", "reshuffle", "random_zero", 0.0012), data)
    round0 = lottery.run_round(setup, 0, None)
    mask = lottery.next_mask(setup, 1, round0.checkpoint)
    lottery.treat(setup, 1, mask, round0.checkpoint)
    assert hashing.state_hash(mask)[:16] == LOTTERY[(2, "random", "reshuffle", "random_zero", 0.0012)][1][2]
    start = hashing.state_hash({k: v for k, v in setup.net.state_dict().items() if k.endswith(("weight", "bias"))})
    assert start[:16] == LOTTERY[(2, "random", "reshuffle", "random_zero", 0.0012)][1][0]


def test_lottery_records_how_many_kept_weights_tie_breaking_chose(data):
    """Counted by hand from the round's own weights: large_final_diff_sign keeps the weights whose sign changed in
    round k-1 and fills the shortfall at random (the fill is the count); random's every kept weight is a draw."""
    spec = lottery.LotterySpec("lenet300_100", 3, TrainingConfig(iterations=30, lr=1.2e-3, eval_every=10),
                               criterion="large_final_diff_sign", rounds=2)
    setup = lottery.setup(spec, data)
    results = list(lottery.iterate_rounds(setup))
    assert results[0].record.tie_breaks == {name: 0 for name in sorted(setup.rates)}
    for k in (1, 2):
        alive, mask, final = results[k - 1].mask, results[k].mask, results[k - 1].final
        by_hand = {}
        for name in sorted(setup.rates):
            differ = alive[name] & (torch.sign(setup.init_state[name]) != torch.sign(final[name]))
            kept = int(mask[name].sum())
            by_hand[name] = max(kept - int(differ.sum()), 0)
        assert results[k].record.tie_breaks == by_hand
        assert any(by_hand.values()) and list(results[k].record.to_dict()) == ROUND_FIELDS
    random = lottery.setup(lottery.LotterySpec("lenet300_100", 3, spec.training, criterion="random", rounds=1), data)
    last = list(lottery.iterate_rounds(random))[-1]
    assert last.record.tie_breaks == {name: int(m.sum()) for name, m in sorted(last.mask.items())}


def test_lottery_rejects_unknown_names_before_training(data):
    with pytest.raises(ValueError, match="valid choices"):
        lottery.setup(lottery.LotterySpec("lenet300_100", 1, TrainingConfig(10, 1e-3), criterion="largest"), data)
    with pytest.raises(ValueError, match="criterion source 'middle'.*valid choices: init, final, best, iter"):
        lottery.setup(lottery.LotterySpec("lenet300_100", 1, TrainingConfig(10, 1e-3), sources=("init", "middle")),
                      data)


def test_lottery_in_float64_trains_in_float64(data):
    spec = lottery.LotterySpec("lenet300_100", 1, TrainingConfig(iterations=20, lr=1.2e-3, eval_every=10), rounds=1)
    results = list(lottery.iterate_rounds(lottery.setup(spec, data, dtype=torch.float64)))
    assert {t.dtype for t in results[-1].final.values()} == {torch.float64}
    assert results[-1].mask.percent_remaining < 100 and 0 <= results[-1].record.test_acc <= 1


@pytest.mark.parametrize("key", list(SUPERMASK))
def test_supermask_library_reproduces_the_pre_library_code(data, key):
    seed, signed_constant = key
    spec = supermask_training.SupermaskSpec("lenet300_100", seed, TrainingConfig(iterations=100, lr=0.1,
                                            eval_every=25), signed_constant=signed_constant, eval_samples=3)
    points = []
    result = supermask_training.run(spec, data, on_eval=points.append)
    r = result.record
    assert supermask_summary(r.to_dict()) == SUPERMASK[key]
    assert [p["iteration"] for p in points] == [25, 50, 75, 100] and 0 < points[-1]["expected_density"] < 1
    assert list(r.to_dict()) == SUPERMASK_FIELDS and set(result.scores) == {"fcs.0", "fcs.1", "fcs.2"}


def test_the_experiments_record_what_the_library_returns(data):
    """ex.run (the Sacred experiments, new code) stores the library's records: same hashes and accuracies."""
    from experiments import lottery as lottery_ex
    from experiments import supermask as supermask_ex

    key = (1, "large_final", "original", "zero", 0.0012)
    run = lottery_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"}, config_updates={
        "data": {"name": "synthetic"}, "seed": 1, "save_artifacts": False,
        "training": {"threads": 1, "eval_every": 10, "device": "cpu"}})
    assert [summary(r) for r in run.info["rounds"]] == LOTTERY[key]
    assert all(list(r) == ROUND_FIELDS for r in run.info["rounds"])
    run = supermask_ex.ex.run(named_configs=["fast"], options={"--loglevel": "ERROR"}, config_updates={
        "data": {"name": "synthetic"}, "seed": 2, "save_artifacts": False, "supermask": {"signed_constant": True},
        "training": {"threads": 1, "device": "cpu"}})
    assert supermask_summary(run.info) == SUPERMASK[(2, True)] and set(SUPERMASK_FIELDS) <= set(run.info)
