"""The pruning rule of every mask criterion, checked against scores computed independently here."""

import numpy as np
import pytest
import torch

from masking import criteria

ALL = [
    "large_final", "small_final", "large_init", "small_init", "large_init_large_final", "small_init_small_final",
    "magnitude_increase", "movement", "random", "large_final_same_sign", "large_final_diff_sign",
]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def weights(shape=(40, 25), seed=0):
    g = gen(seed)
    w_init = torch.randn(shape, generator=g)
    w_final = w_init + 0.8 * torch.randn(shape, generator=g)
    return w_init, w_final


def random_mask(shape, keep, seed=1):
    return torch.rand(shape, generator=gen(seed)) < keep


# Scores written out from docs/protocol.md, independently of masking.criteria (numpy, not torch).
def reference_scores(name, wi, wf):
    wi, wf = wi.numpy().astype(np.float64), wf.numpy().astype(np.float64)
    return {
        "large_final": np.abs(wf),
        "small_final": -np.abs(wf),
        "large_init": np.abs(wi),
        "small_init": -np.abs(wi),
        "magnitude_increase": np.abs(wf) - np.abs(wi),
        "movement": np.abs(wf - wi),
    }[name]


def test_names_are_exactly_the_protocols_eleven():
    assert criteria.names() == ALL


def test_unknown_criterion_names_value_and_choices():
    w_init, w_final = weights()
    with pytest.raises(ValueError, match=r"'largest_final'.*valid choices: large_final, small_final"):
        criteria.next_mask("largest_final", w_init, w_final, torch.ones_like(w_init, dtype=torch.bool), 0.2)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, "0.2", True])
def test_bad_fraction_is_rejected(fraction):
    w_init, w_final = weights()
    with pytest.raises(ValueError, match="prune fraction"):
        criteria.next_mask("random", w_init, w_final, torch.ones_like(w_init, dtype=torch.bool), fraction)


def test_mask_must_be_bool_and_shapes_match():
    w_init, w_final = weights()
    with pytest.raises(ValueError, match="torch.bool"):
        criteria.next_mask("random", w_init, w_final, torch.ones_like(w_init), 0.2)
    with pytest.raises(ValueError, match="same shape"):
        criteria.next_mask("random", w_init, w_final[:3], torch.ones_like(w_init, dtype=torch.bool), 0.2)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("keep,fraction", [(1.0, 0.2), (0.61, 0.1), (0.3, 0.15), (0.05, 0.2), (1.0, 0.0)])
def test_exact_number_pruned_and_nested(name, keep, fraction):
    w_init, w_final = weights()
    mask = random_mask(w_init.shape, keep)
    alive = int(mask.sum())
    new = criteria.next_mask(name, w_init, w_final, mask, fraction, gen())
    assert new.dtype == torch.bool and new.shape == mask.shape
    expected_pruned = int(np.floor(fraction * alive + 0.5))  # rounded to nearest, halves up
    assert alive - int(new.sum()) == expected_pruned
    assert not (new & ~mask).any(), "the new mask must be a subset of the old one"


def test_rounding_is_to_nearest():
    w_init, w_final = weights((10, 10))
    full = torch.ones(10, 10, dtype=torch.bool)
    assert int(criteria.next_mask("random", w_init, w_final, full, 0.204, gen()).sum()) == 80  # 20.4 -> 20
    assert int(criteria.next_mask("random", w_init, w_final, full, 0.206, gen()).sum()) == 79  # 20.6 -> 21
    assert int(criteria.next_mask("random", w_init, w_final, full, 0.205, gen()).sum()) == 79  # 20.5 -> 21


@pytest.mark.parametrize("name", ["large_final", "small_final", "large_init", "small_init", "magnitude_increase",
                                  "movement"])
def test_kept_are_the_top_scores(name):
    w_init, w_final = weights()
    mask = random_mask(w_init.shape, 0.7)
    new = criteria.next_mask(name, w_init, w_final, mask, 0.2, gen())
    scores = reference_scores(name, w_init, w_final)
    alive_scores = np.sort(scores[mask.numpy()])[::-1]
    keep = int(new.sum())
    assert len(np.unique(alive_scores)) == len(alive_scores), "test needs distinct scores"
    np.testing.assert_array_equal(np.sort(scores[new.numpy()])[::-1], alive_scores[:keep])


def _ranks(values):
    order = np.argsort(values, kind="stable")
    r = np.empty(len(values))
    r[order] = np.arange(len(values)) / (len(values) - 1)
    return r


@pytest.mark.parametrize("name,sign", [("large_init_large_final", 1), ("small_init_small_final", -1)])
def test_both_large_and_both_small_use_the_min_of_percentile_ranks(name, sign):
    w_init, w_final = weights()
    mask = random_mask(w_init.shape, 0.8)
    new = criteria.next_mask(name, w_init, w_final, mask, 0.3, gen())
    m = mask.numpy()
    qi, qf = _ranks(np.abs(w_init.numpy()[m])), _ranks(np.abs(w_final.numpy()[m]))
    score = np.minimum(qi, qf) if sign > 0 else np.minimum(1 - qi, 1 - qf)
    kept = new.numpy()[m]
    assert score[kept].min() >= score[~kept].max()
    # the shared-percentile reading of docs/protocol.md: no pruned weight is above the cut in both rankings
    cut = score[kept].min()
    above_both = (qi >= cut) & (qf >= cut) if sign > 0 else (1 - qi >= cut) & (1 - qf >= cut)
    assert above_both.sum() <= kept.sum() + (score == cut).sum()
    assert (kept | ~above_both | (score == cut)).all()


@pytest.mark.parametrize("name,same", [("large_final_same_sign", True), ("large_final_diff_sign", False)])
def test_sign_criteria_keep_only_their_sign_while_there_are_enough(name, same):
    w_init, w_final = weights((50, 40))
    mask = torch.ones_like(w_init, dtype=torch.bool)
    eligible = (torch.sign(w_init) == torch.sign(w_final)) if same else (torch.sign(w_init) != torch.sign(w_final))
    fraction = 1 - 0.5 * int(eligible.sum()) / mask.numel()  # keep half of the eligible weights
    new = criteria.next_mask(name, w_init, w_final, mask, fraction, gen())
    assert int(new.sum()) > 0
    assert eligible[new].all()
    # among the eligible, the largest |w_final| are kept
    assert w_final.abs()[new].min() >= w_final.abs()[eligible & ~new].max()


@pytest.mark.parametrize("name,same", [("large_final_same_sign", True), ("large_final_diff_sign", False)])
def test_sign_criteria_fill_a_shortfall_at_random(name, same):
    w_init, w_final = weights((50, 40))
    mask = torch.ones_like(w_init, dtype=torch.bool)
    eligible = (torch.sign(w_init) == torch.sign(w_final)) if same else (torch.sign(w_init) != torch.sign(w_final))
    n_eligible = int(eligible.sum())
    keep = n_eligible + 300
    fraction = 1 - keep / mask.numel()
    fills = []
    for seed in range(4):
        new = criteria.next_mask(name, w_init, w_final, mask, fraction, gen(seed))
        assert int(new.sum()) == keep
        assert new[eligible].all(), "every eligible weight is kept before any filler"
        fills.append(new & ~eligible)
    assert all(int(f.sum()) == 300 for f in fills)
    assert not torch.equal(fills[0], fills[1]), "the filler depends on the generator"
    # the filler does not follow |w_final| (it is random): its mean magnitude is near that of all non-eligible
    ratio = w_final.abs()[fills[0]].mean() / w_final.abs()[~eligible].mean()
    assert 0.7 < float(ratio) < 1.3


def test_random_criterion_is_uniform():
    """Each of 20 positions is kept with probability 15/20 = 0.75; over 4,000 seeded draws the frequency of every
    position is within 5 standard errors (5 * sqrt(.75 * .25 / 4000) = 0.034) of 0.75."""
    w_init, w_final = weights((4, 5))
    mask = torch.ones(4, 5, dtype=torch.bool)
    g = gen(3)
    counts = sum(criteria.next_mask("random", w_init, w_final, mask, 0.25, g).float() for _ in range(4000))
    freq = counts / 4000
    assert (freq - 0.75).abs().max() < 5 * np.sqrt(0.75 * 0.25 / 4000)


def test_ties_are_broken_at_random_and_seeded():
    w_init = torch.ones(30, 30)
    w_final = torch.ones(30, 30)  # every score ties
    mask = torch.ones(30, 30, dtype=torch.bool)
    a = criteria.next_mask("large_final", w_init, w_final, mask, 0.5, gen(1))
    b = criteria.next_mask("large_final", w_init, w_final, mask, 0.5, gen(2))
    c = criteria.next_mask("large_final", w_init, w_final, mask, 0.5, gen(1))
    assert int(a.sum()) == 450 and not torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, torch.arange(900).view(30, 30) < 450), "ties must not fall back to index order"


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_mask(name):
    w_init, w_final = weights()
    mask = random_mask(w_init.shape, 0.5)
    a = criteria.next_mask(name, w_init, w_final, mask, 0.2, gen(7))
    b = criteria.next_mask(name, w_init, w_final, mask, 0.2, gen(7))
    assert torch.equal(a, b)


def test_conv_shaped_weights():
    w_init, w_final = weights((8, 4, 3, 3))
    mask = torch.ones_like(w_init, dtype=torch.bool)
    new = criteria.next_mask("large_final", w_init, w_final, mask, 0.1, gen())
    assert new.shape == (8, 4, 3, 3) and int(new.sum()) == 288 - 29
