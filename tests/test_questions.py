"""The rebuttal's open questions as configurations: Supermasks started from a mask (Q8), sign randomisation of a
learned Supermask (Q7), masks from other points of the trajectory (Q9), input scaling as a data setting."""

import pytest
import torch

from experiments import datasets
from masking import models, supermask

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread


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


def lottery(source, iteration=None, criterion="magnitude_increase", **updates):
    from experiments.lottery import ex

    return ex.run(config_updates={
        "data": {"name": "synthetic", "val_size": 300, "synthetic_train": 1500, "synthetic_test": 300},
        "training": {"iterations": 60, "eval_every": 10, "lr": 0.01}, "pruning": {"rounds": 1}, "seed": 3,
        "criterion": {"name": criterion, "source": source, "source_iteration": iteration},
        "save_artifacts": False, **updates})


def test_mask_sources_score_different_states_and_are_recorded():
    runs = {s: lottery(s, 20 if s.endswith(("iter", "iter_final")) else None)
            for s in ("init_final", "init_best", "iter_final", "init_iter")}
    rounds = {s: run.info["rounds"] for s, run in runs.items()}
    assert all((r[0]["mask_source"], r[0]["source_init_iteration"]) == ("none", None) for r in rounds.values())
    best = rounds["init_final"][0]["early_stop_iteration"]
    assert {s: (r[1]["mask_source"], [r[1]["source_init_iteration"], r[1]["source_final_iteration"]])
            for s, r in rounds.items()} == {
        "init_final": ("init_final", [0, 60]), "init_best": ("init_best", [0, best]),
        "iter_final": ("iter_final", [20, 60]), "init_iter": ("init_iter", [0, 20])}
    masks = {s: r[1]["mask_hash"] for s, r in rounds.items()}
    assert len({masks["init_final"], masks["iter_final"], masks["init_iter"]}) == 3
    assert (masks["init_best"] == masks["init_final"]) == (best == 60)
    assert len({r[0]["final_hash"] for r in rounds.values()}) == 1  # round 0 is the same dense training


def test_bad_mask_source_settings_fail_in_one_line():
    from experiments.errors import ConfigError

    with pytest.raises(ConfigError, match="criterion.source='init_last' is not valid: unknown criterion source "
                                          "'init_last'; valid choices: <a>_<b> with a and b in init, final, best, "
                                          "iter"):
        lottery("init_last")
    with pytest.raises(ConfigError, match=r"source_iteration=None is not valid: the iter source needs an evaluation "
                                          r"step before the last \(a multiple of eval_every=10 below 60\), got None"):
        lottery("init_iter")
    with pytest.raises(ConfigError, match="source_iteration=25 is not valid: the iter source needs an evaluation"):
        lottery("iter_final", 25)


def test_supermask_from_a_criterion_mask_records_the_move_and_the_sign_variants():
    from experiments.supermask import ex

    run = ex.run(config_updates={
        "data": {"name": "synthetic", "val_size": 300, "synthetic_train": 1500, "synthetic_test": 300},
        "training": {"iterations": 40, "eval_every": 20}, "seed": 1, "save_artifacts": False,
        "supermask": {"start": "criterion", "start_criterion": "large_final", "start_percent": 30.0,
                      "start_iterations": 40, "eval_samples": 2, "sign_draws": 2, "p_keep": 0.8, "p_drop": 0.2}})
    info = run.info
    assert info["start_density"] == pytest.approx(0.30, abs=0.002)  # 30% of each layer, rounded per layer
    assert 0 <= info["start_hamming_fraction"] <= 1 and info["start_hamming"] > 0  # 40 steps at lr 0.1 move it
    # at the start the expected density is 0.8 * 0.3 + 0.2 * 0.7 = 0.38; from scratch it would be 0.5
    assert 0.2 < info["expected_density"] < 0.5
    for variant in supermask.SIGN_VARIANTS:
        assert 0 <= info[f"{variant}_acc_mean"] <= 1 and info[f"{variant}_acc_std"] >= 0


def test_supermask_from_the_mask_of_a_lottery_run_in_the_database(db_server, db_name, ticketlab_env):
    import pymongo

    from tests.conftest import run_cli

    spec, ticketlab_env = f"{db_server.address}:{db_name}", dict(ticketlab_env, OMP_NUM_THREADS="1")
    data = ["data.name=synthetic", "data.val_size=300", "data.synthetic_train=1500", "data.synthetic_test=300",
            "training.iterations=30", "training.eval_every=10", "seed=2"]
    result = run_cli("experiments.lottery", "with", *data, "pruning.rounds=1", "-m", spec, env=ticketlab_env)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = pymongo.MongoClient(f"mongodb://{db_server.address}")[db_name]["runs"]
    lottery = runs.find_one({"experiment.name": "lottery"})
    result = run_cli("experiments.supermask", "with", *data, "supermask.start=run",
                     f"supermask.start_run={lottery['_id']}", "supermask.start_round=1", "supermask.eval_samples=2",
                     "supermask.sign_draws=0", "-m", spec, env=ticketlab_env)
    assert result.returncode == 0, result.stderr[-2000:]
    info = runs.find_one({"experiment.name": "supermask"})["info"]
    assert info["start_density"] == pytest.approx(lottery["info"]["rounds"][1]["percent_remaining"] / 100)
    assert info["random_signs_acc_mean"] is None  # sign_draws=0: no sign variants
    result = run_cli("experiments.supermask", "with", *data, "supermask.start=run",
                     f"supermask.start_run={lottery['_id']}", "supermask.start_round=5", "-m", spec,
                     env=ticketlab_env)
    assert result.returncode != 0
    assert f"supermask.start_run={lottery['_id']} supermask.start_round=5: run {lottery['_id']} has no round 5 " \
           f"with a stored mask" in result.stderr
    assert "Traceback" not in result.stderr


def test_input_scaling_is_recorded_and_part_of_the_condition():
    from ticketlab.identity import condition_hash
    from experiments.errors import ConfigError
    from experiments.lottery import ex
    from experiments.sweep import resolve

    unit, standardized = resolve(ex, ["data.name=synthetic"]), resolve(ex, ["data.name=synthetic",
                                                                          "data.preprocess=standardize"])
    assert unit["data"]["preprocess"] == "unit" and standardized["data"]["preprocess"] == "standardize"
    assert condition_hash(unit) != condition_hash(standardized)
    with pytest.raises(ConfigError, match=r"data.preprocess='zscore' is not valid; valid choices: unit, standardize"):
        resolve(ex, ["data.name=synthetic", "data.preprocess=zscore"])


def test_every_run_of_the_question_studies_is_a_valid_config():
    """The one-command studies configure (and so validate) every run they would start, as the sweep does."""
    import importlib

    from ticketlab.identity import condition_hash
    from experiments import questions
    from experiments.sweep import build_axes, grid_points, parse_args, resolve

    settings = questions.Settings("1", iterations=900, rounds=2)
    assert settings.source_iteration == 300
    seen = {}
    for name, study in questions.STUDIES.items():
        for part in study.parts(settings):
            args, parser = parse_args(["-m", "h:1:db", "--experiment", part.experiment, *part.flags, "--seeds",
                                       settings.seeds, "with", *settings.shared(part.experiment), *part.updates])
            ex = importlib.import_module(f"experiments.{part.experiment}").ex
            for point in grid_points(build_axes(args, parser)):
                config = resolve(ex, args.shared + point)
                assert config["data"]["name"] == "fashion_mnist" and config["training"]["iterations"] == 900
                seen.setdefault(name, set()).add(condition_hash(config))
    assert len(seen["q9"]) == 3 + 2 + 2 + 1 and len(seen["q8"]) == 3 and len(seen["scaling"]) == 2
    assert seen["q7"] == seen["q8"]  # q7 reads the q8 runs
    assert len(seen["lfss"]) == 3 and len(seen["bimodal"]) == 8 and len(seen["mask0"]) == 4
    assert seen["quadrant"] == seen["bimodal"]  # one sweep of the mask-1 actions answers both
    # large_final / original / zero is one condition, run once for lfss, bimodal and mask0
    assert len(seen["lfss"] & seen["bimodal"] & seen["mask0"]) == 1
    assert questions.part_conditions(questions.mask0_parts(settings), settings) == seen["mask0"]


def test_a_claims_outcome_is_held_not_held_or_cannot_be_told():
    """The sentence of a claim from a comparison table: significant in the claimed direction (held), the other
    way (did not hold), or neither (cannot be told), with the numbers."""
    import pandas as pd

    from experiments.questions import outcome

    def table(diffs, significant):
        return pd.DataFrame([{"percent_remaining": p, "condition": "signed_reinit", "baseline": "reinit",
                              "mean": 0.8 + d, "mean_baseline": 0.8, "diff": d, "ci_low": d - 0.01,
                              "ci_high": d + 0.01, "p_holm": 0.01 if sig else 0.5, "significant": sig}
                             for p, d, sig in zip((80.0, 64.0, 51.2), diffs, significant)])

    verdict, text = outcome(table([0.01, 0.02, 0.03], [False, True, True]), "signed_reinit", +1)
    assert verdict == "held" and "above at 3 of 3 percentages" in text and "claimed direction at 2 (64%, 51.2%)" \
        in text and "at 51.2% remaining 0.8300 vs 0.8000 (diff +0.0300, 95% CI [+0.0200, +0.0400], p_holm=0.01)" in text
    assert outcome(table([0.01, -0.02, 0.03], [False, True, True]), "signed_reinit", +1)[0] == "did not hold"
    assert outcome(table([0.01, 0.02, 0.03], [False] * 3), "signed_reinit", +1)[0] == \
        "cannot be told at these settings"
    assert outcome(None, "signed_reinit", +1)[0] == "cannot be told at these settings"


def test_a_database_lost_while_the_reports_are_written_is_one_line(tmp_path, monkeypatch, capsys):
    """Seen in a fresh-clone run of `questions all`: the local database died (out of memory) after the sweeps and
    the report phase ended in a pymongo traceback. Now one line that says what is kept and what to do; exit 1."""
    import dataclasses

    import pymongo.errors

    from experiments import localdb, questions

    def lost(db, s, out):
        raise pymongo.errors.ServerSelectionTimeoutError("127.0.0.1:1: [Errno 111] Connection refused")

    monkeypatch.setitem(questions.STUDIES, "q9", dataclasses.replace(questions.STUDIES["q9"], report=lost))
    port = str(localdb.free_port())
    try:
        code = questions.main(["q9", "--report-only", "--home", str(tmp_path), "--port", port])
    finally:
        localdb.stop(tmp_path)
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"error: no reports: the run database at 127.0.0.1:{port} stopped answering "
                          f"(ServerSelectionTimeoutError); what completed is stored: run the same command again")
