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


# A tiny layer, counted by hand. w_init and w_final of six weights; |w_final| = 2, 3, 2, 5, 2, 0.5.
# signs (init, final): ++, -+, +-, --, ++, ++: same sign at 0, 3, 4, 5; different at 1, 2.
TINY_INIT = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0, 6.0])
TINY_FINAL = torch.tensor([2.0, 3.0, -2.0, -5.0, 2.0, 0.5])


@pytest.mark.parametrize("name,keep,by_hand", [
    ("large_final", 3, 1),  # 5 and 3 by score, then one of the three 2s: 1 chosen by tie-breaking
    ("large_final", 4, 2),  # 5, 3, then two of the three 2s
    ("large_final", 5, 0),  # 5, 3 and all three 2s: the scores decide
    ("large_final", 6, 0),  # everything kept: nothing to choose
    ("large_final_same_sign", 2, 1),  # same sign: |w_f| 2, 5, 2, 0.5 -> 5, then one of the two 2s (0, 4)
    ("large_final_same_sign", 3, 0),  # 5 and both 2s
    ("large_final_same_sign", 4, 0),  # all four same-sign weights: no shortfall
    ("large_final_same_sign", 5, 1),  # the four, then one of the two other-sign weights (-inf) at random
    ("large_final_diff_sign", 2, 0),  # both different-sign weights (|w_f| 3 and 2)
    ("large_final_diff_sign", 5, 3),  # both, then 3 of the 4 same-sign weights (-inf) at random
    ("random", 4, 4),  # every score ties: every kept weight is a tie-break
    ("magnitude_increase", 3, 0),  # |w_f| - |w_i| = 1, 1, -1, 1, -3, -5.5: the three 1s, no other 1
])
def test_tie_broken_counts_what_the_random_order_chose(name, keep, by_hand):
    mask = torch.ones(6, dtype=torch.bool)
    fraction = (6 - keep) / 6
    for seed in range(3):  # the count does not depend on which tied weights the draw picks
        new, ties = criteria.select(name, TINY_INIT, TINY_FINAL, mask, fraction, gen(seed))
        assert int(new.sum()) == keep and ties == by_hand
        assert torch.equal(new, criteria.next_mask(name, TINY_INIT, TINY_FINAL, mask, fraction, gen(seed)))


def test_tie_broken_counts_only_alive_weights():
    # weight 3 (|w_f| 5) and weight 0 (a 2) already pruned: alive 1, 2, 4, 5 with |w_f| 3, 2, 2, 0.5; keep 2:
    # 3 by score, then one of the two alive 2s
    mask = torch.tensor([False, True, True, False, True, True])
    new, ties = criteria.select("large_final", TINY_INIT, TINY_FINAL, mask, 0.5, gen())
    assert int(new.sum()) == 2 and bool(new[1]) and ties == 1 and not (new & ~mask).any()


def test_prune_records_the_tie_breaks_of_every_layer():
    from masking import pruning

    init = {"a.weight": TINY_INIT, "b.weight": TINY_INIT.view(2, 3)}
    final = {"a.weight": TINY_FINAL, "b.weight": TINY_FINAL.view(2, 3)}
    mask = pruning.Mask.ones(init)
    assert mask.tie_breaks is None  # not made by a pruning round
    new = pruning.prune("large_final_diff_sign", init, final, mask, {"a.weight": 1 / 6, "b.weight": 4 / 6}, gen())
    assert new.tie_breaks == {"a.weight": 3, "b.weight": 0}  # keep 5 (2 by score, 3 filled) and keep 2 (both)
    # the masks are those next_mask draws in the same order from the same generator
    g = gen()
    assert torch.equal(new["a.weight"], criteria.next_mask("large_final_diff_sign", TINY_INIT, TINY_FINAL,
                                                           torch.ones(6, dtype=torch.bool), 1 / 6, g))
