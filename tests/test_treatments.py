"""Each mask-1 and mask-0 action's defining property."""

import math

import pytest
import torch

from masking import initializers, treatments

MASK1 = ["original", "reinit", "reshuffle", "constant", "signed_reinit", "signed_reshuffle", "signed_constant",
         "signed_bimodal"]
MASK0 = ["zero", "init", "zero_if_toward_zero", "random_zero"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def layer():
    g = gen(0)
    w_init = torch.randn(60, 50, generator=g) * 0.1
    w_final = w_init + 0.1 * torch.randn(60, 50, generator=g)
    mask = torch.rand(60, 50, generator=g) < 0.4
    return w_init, w_final, mask


def test_names():
    assert treatments.mask1_names() == MASK1
    assert treatments.mask0_names() == MASK0


def test_unknown_names_list_choices(layer):
    w_init, w_final, mask = layer
    with pytest.raises(ValueError, match=r"unknown mask-1 action 'rewind'.*original, reinit"):
        treatments.mask1("rewind", w_init, mask, gen())
    with pytest.raises(ValueError, match=r"unknown mask-0 action 'zeros'.*zero, init, zero_if_toward_zero"):
        treatments.mask0("zeros", w_init, w_final, mask, gen())


@pytest.mark.parametrize("name", MASK1)
def test_mask1_is_zero_where_pruned_and_seeded(layer, name):
    w_init, _, mask = layer
    a = treatments.mask1(name, w_init, mask, gen(5))
    assert a.shape == w_init.shape
    assert (a[~mask] == 0).all()
    assert (a[mask] != 0).all()
    assert torch.equal(a, treatments.mask1(name, w_init, mask, gen(5)))


def test_original_is_the_initial_value(layer):
    w_init, _, mask = layer
    assert torch.equal(treatments.mask1("original", w_init, mask, gen())[mask], w_init[mask])


def test_reinit_is_a_fresh_glorot_draw(layer):
    w_init, _, mask = layer
    a = treatments.mask1("reinit", w_init, mask, gen(1))
    assert not torch.isclose(a[mask], w_init[mask]).any()
    assert abs(float(a[mask].std()) / initializers.glorot_std(w_init.shape) - 1) < 0.06
    assert not torch.equal(a, treatments.mask1("reinit", w_init, mask, gen(2)))


def test_reinit_takes_a_torch_nn_init_function(layer):
    w_init, _, mask = layer
    a = treatments.mask1("reinit", w_init, mask, gen(1), init_fn=torch.nn.init.kaiming_normal_)
    expected_std = math.sqrt(2.0 / w_init.shape[1])
    assert abs(float(a[mask].std()) / expected_std - 1) < 0.06


def test_reshuffle_permutes_kept_initial_values(layer):
    w_init, _, mask = layer
    a = treatments.mask1("reshuffle", w_init, mask, gen())
    assert torch.equal(a[mask].sort().values, w_init[mask].sort().values)
    assert (a[mask] != w_init[mask]).float().mean() > 0.9


def test_constant_is_alpha_with_random_sign(layer):
    w_init, _, mask = layer
    a = treatments.mask1("constant", w_init, mask, gen())
    alpha = float(w_init.std())
    assert torch.allclose(a[mask].abs(), torch.full_like(a[mask], alpha))
    positive = float((a[mask] > 0).float().mean())
    assert 0.45 < positive < 0.55
    agree = float((torch.sign(a[mask]) == torch.sign(w_init[mask])).float().mean())
    assert 0.45 < agree < 0.55, "the sign is random, not the initial sign"


def test_signed_reinit_keeps_sign_with_fresh_magnitude(layer):
    w_init, _, mask = layer
    a = treatments.mask1("signed_reinit", w_init, mask, gen())
    assert torch.equal(torch.sign(a[mask]), torch.sign(w_init[mask]))
    assert not torch.isclose(a[mask].abs(), w_init[mask].abs()).any()
    assert abs(float(a[mask].pow(2).mean().sqrt()) / initializers.glorot_std(w_init.shape) - 1) < 0.06


def test_signed_reshuffle_permutes_magnitudes_keeps_signs(layer):
    w_init, _, mask = layer
    a = treatments.mask1("signed_reshuffle", w_init, mask, gen())
    assert torch.equal(torch.sign(a[mask]), torch.sign(w_init[mask]))
    assert torch.equal(a[mask].abs().sort().values, w_init[mask].abs().sort().values)
    assert (a[mask].abs() != w_init[mask].abs()).float().mean() > 0.9


def test_signed_constant_is_std_times_sign(layer):
    w_init, _, mask = layer
    a = treatments.mask1("signed_constant", w_init, mask, gen())
    expected = float(w_init.std()) * torch.sign(w_init)
    assert torch.equal(a[mask], expected[mask])


def test_signed_bimodal_keeps_signs_with_magnitudes_away_from_zero(layer):
    w_init, _, mask = layer
    a = treatments.mask1("signed_bimodal", w_init, mask, gen(3))
    assert torch.equal(torch.sign(a[mask]), torch.sign(w_init[mask]))
    std = initializers.glorot_std(w_init.shape)
    assert abs(float(a[mask].pow(2).mean().sqrt()) / std - 1) < 0.06  # signed_reinit's mean square
    magnitude = a[mask].abs() / std
    assert abs(float(magnitude.mean()) - 0.968) < 0.03 and abs(float(magnitude.std()) - 0.25) < 0.03
    # bimodal: about 0.1% of the magnitudes under a quarter of the std, against about 20% for signed_reinit
    near_zero = {name: float((treatments.mask1(name, w_init, mask, gen(3))[mask].abs() < std / 4).float().mean())
                 for name in ("signed_bimodal", "signed_reinit")}
    assert near_zero["signed_bimodal"] < 0.01 and 0.15 < near_zero["signed_reinit"] < 0.25
    fresh = treatments.mask1("signed_reinit", w_init, mask, gen(3))  # the same draw, moved away from zero
    assert not torch.equal(a, fresh) and not torch.equal(a, treatments.mask1("signed_bimodal", w_init, mask, gen(4)))


def test_a_mask1_action_is_one_registration(tmp_path):
    """signed_bimodal is one registration in masking.treatments: the experiments' valid choices list it and a run
    with it trains, its start weights signed like the initial ones."""
    from experiments.errors import ConfigError
    from experiments.lottery import ex

    config = {"data": {"name": "synthetic", "val_size": 200, "synthetic_train": 600, "synthetic_test": 200},
              "training": {"iterations": 20, "eval_every": 10}, "pruning": {"rounds": 1}, "seed": 1,
              "save_artifacts": False}
    with pytest.raises(ConfigError, match="treatment.mask1='bimodal' is not valid; valid choices: original, .*"
                                          "signed_constant, signed_bimodal"):
        ex.run(config_updates={**config, "treatment": {"mask1": "bimodal"}})
    runs = {name: ex.run(config_updates={**config, "treatment": {"mask1": name}}, options={"--loglevel": "ERROR"})
            for name in ("signed_bimodal", "signed_reinit")}
    rounds = {name: run.info["rounds"] for name, run in runs.items()}
    assert all(run.status == "COMPLETED" for run in runs.values())
    assert rounds["signed_bimodal"][1]["mask_hash"] == rounds["signed_reinit"][1]["mask_hash"]  # one mask
    assert rounds["signed_bimodal"][1]["start_hash"] != rounds["signed_reinit"][1]["start_hash"]
    assert 0 <= rounds["signed_bimodal"][1]["test_acc"] <= 1


@pytest.mark.parametrize("name", MASK0)
def test_mask0_is_zero_where_kept(layer, name):
    w_init, w_final, mask = layer
    v = treatments.mask0(name, w_init, w_final, mask, gen())
    assert (v[mask] == 0).all()
    assert torch.equal(v, treatments.mask0(name, w_init, w_final, mask, gen()))


def test_mask0_zero_and_init(layer):
    w_init, w_final, mask = layer
    assert (treatments.mask0("zero", w_init, w_final, mask, gen()) == 0).all()
    assert torch.equal(treatments.mask0("init", w_init, w_final, mask, gen())[~mask], w_init[~mask])


def test_zero_if_toward_zero(layer):
    w_init, w_final, mask = layer
    v = treatments.mask0("zero_if_toward_zero", w_init, w_final, mask, gen())
    toward = w_final.abs() < w_init.abs()
    assert (v[~mask & toward] == 0).all()
    assert torch.equal(v[~mask & ~toward], w_init[~mask & ~toward])
    assert 0 < int((~mask & toward).sum()) < int((~mask).sum())


def test_random_zero_matches_the_count_at_random_positions(layer):
    w_init, w_final, mask = layer
    toward = ~mask & (w_final.abs() < w_init.abs())
    v = treatments.mask0("random_zero", w_init, w_final, mask, gen(3))
    zeros = ~mask & (v == 0)
    assert int(zeros.sum()) == int(toward.sum())
    assert torch.equal(v[~mask & ~zeros], w_init[~mask & ~zeros])
    overlap = float((zeros & toward).sum()) / float(toward.sum())
    expected = float(toward.sum()) / float((~mask).sum())  # chance overlap of a random subset
    assert abs(overlap - expected) < 0.1
    assert not torch.equal(v, treatments.mask0("random_zero", w_init, w_final, mask, gen(4)))
