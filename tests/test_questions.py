"""The rebuttal's open questions as configurations: Supermasks started from a mask (Q8), sign randomisation of a
learned Supermask (Q7), masks from other points of the trajectory (Q9), input scaling as a data setting."""

import pytest
import torch

from experiments import datasets
from masking import models, supermask


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_mask(net, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {f"{n}.weight": torch.rand(l.scores.shape, generator=g) < density
            for n, l in supermask.supermask_layers(net).items()}


def test_supermask_starts_at_the_given_keep_probabilities():
    net = models.build("conv2", seed=0, kind="supermask")
    mask = random_mask(net)
    supermask.scores_from_mask(net, mask, p_keep=0.8, p_drop=0.15)
    for name, layer in supermask.supermask_layers(net).items():
        probs = layer.probabilities().detach()
        keep = mask[f"{name}.weight"]
        assert torch.allclose(probs[keep], torch.tensor(0.8)) and torch.allclose(probs[~keep], torch.tensor(0.15))
    density = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert supermask.expected_density(net) == pytest.approx(0.8 * density + 0.15 * (1 - density), rel=1e-5)
    assert supermask.expected_mask(net).keys() == mask.keys()
    change = supermask.mask_change(mask, net)  # nothing learned yet: the expected mask is the start mask
    assert change["hamming"] == 0 and change["start_density"] == pytest.approx(density)
    with torch.no_grad():  # drop one kept weight, take up two pruned ones
        layer = supermask.supermask_layers(net)["fcs.2"]
        keep = mask["fcs.2.weight"].flatten()
        layer.scores.view(-1)[keep.nonzero()[0]] = -5.0
        layer.scores.view(-1)[(~keep).nonzero()[:2, 0]] = 5.0
    change = supermask.mask_change(mask, net)
    assert change["hamming"] == 3 and change["hamming_fraction"] == pytest.approx(3 / sum(m.numel() for m in
                                                                                            mask.values()))
    with pytest.raises(ValueError, match="p_keep must be a probability strictly between 0 and 1, got 1.0"):
        supermask.scores_from_mask(net, mask, p_keep=1.0)
    with pytest.raises(ValueError, match="no entry for fcs.2.weight"):
        supermask.scores_from_mask(net, {k: v for k, v in mask.items() if k != "fcs.2.weight"})


def test_sign_randomisation_changes_the_signs_and_nothing_else():
    net = models.build("lenet300_100", seed=2, kind="supermask", score_init=1.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weights = [k for k in before if k.endswith(".weight")]
    for variant in supermask.SIGN_VARIANTS:
        with supermask.signs_changed(net, variant, torch.Generator().manual_seed(1)):
            now = net.state_dict()
            assert all(torch.equal(now[k], before[k]) for k in before if k not in weights)  # scores, biases
            for k in weights:
                w, w0 = now[k], before[k]
                if variant == "random_signs":
                    assert torch.equal(w.abs(), w0.abs())
                    flipped = float((torch.sign(w) != torch.sign(w0)).float().mean())
                    assert 0.45 < flipped < 0.55  # fair coins over >= 1,000 weights
                elif variant == "flipped_signs":
                    assert torch.equal(w, -w0)
                else:
                    assert torch.equal(torch.sign(w), torch.sign(w0))
                    assert torch.allclose(w.abs(), w0.std().expand_as(w))
        assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # restored on exit
    with pytest.raises(ValueError, match="unknown sign variant 'mirror'; valid choices: random_signs"):
        supermask.resigned(before[weights[0]], "mirror")


def test_sign_variants_report_mean_and_std_over_masks_and_draws():
    data = datasets.load("synthetic", "unused", val_size=100, synthetic_train=400, synthetic_test=300)
    net = models.build("lenet300_100", seed=0, kind="supermask", score_init=3.0)
    out = supermask.sign_variants(net, *data.test, samples=3, draws=4, generator=torch.Generator().manual_seed(0))
    assert set(out) == {f"{v}_acc_{s}" for v in supermask.SIGN_VARIANTS for s in ("mean", "std", "std_draws")}
    assert all(0 <= out[f"{v}_acc_mean"] <= 1 for v in supermask.SIGN_VARIANTS)
    assert out["random_signs_acc_std_draws"] > 0 and out["flipped_signs_acc_std_draws"] == 0
    again = supermask.sign_variants(net, *data.test, samples=3, draws=4, generator=torch.Generator().manual_seed(0))
    assert again == out  # seeded


def test_input_scaling_is_a_data_setting():
    kw = dict(val_size=100, synthetic_train=600, synthetic_test=200)
    unit = datasets.load("synthetic", "unused", **kw)
    std = datasets.load("synthetic", "unused", preprocess="standardize", **kw)
    assert 0 <= float(unit.train[0].min()) and float(unit.train[0].max()) <= 1
    pooled = torch.cat([std.train[0], std.val[0]])
    assert abs(float(pooled.mean())) < 1e-5 and float(pooled.std()) == pytest.approx(1, abs=1e-4)
    mean, sd = torch.cat([unit.train[0], unit.val[0]]).mean(), torch.cat([unit.train[0], unit.val[0]]).std()
    assert torch.allclose(std.test[0], (unit.test[0] - mean) / sd, atol=1e-5)  # the training set's statistics
    assert torch.equal(std.train[1], unit.train[1])
    with pytest.raises(ValueError, match="unknown preprocess 'zscore'; valid choices: unit, standardize"):
        datasets.load("synthetic", "unused", preprocess="zscore", **kw)
