"""What the masks are (analysis.masks): overlaps and their chance values equal hand computations on synthetic masks;
on runs the real experiments stored, the masks, sign flips and the mask-0 prediction equal counts made from the
artifacts by hand, and the report gets its masks section."""

from __future__ import annotations

import io
import itertools
import os
import subprocess
import sys
from fractions import Fraction
from math import comb

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from analysis import masks  # noqa: E402
from analysis.query import QueryError  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


def test_jaccard_and_its_chance_value_by_hand():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    assert masks.jaccard(a, b) == 2 / 4  # both: 0 and 4; either: 0, 1, 2, 4
    # two random 2-of-4 masks meet in 0 (1 way of 6), 1 (4 ways) or 2 (1 way) weights: Jaccard 0, 1/3, 1
    assert masks.chance_jaccard(4, 2, 2) == pytest.approx(4 / 6 * 1 / 3 + 1 / 6 * 1)
    assert masks.chance_jaccard(5, 5, 3) == pytest.approx(3 / 5)  # a full mask: the other's density
    assert masks.chance_jaccard(5, 0, 2) == 0 and masks.chance_jaccard(5, 0, 0) == 1


@pytest.mark.parametrize("n,ka,kb", [(6, 3, 2), (7, 4, 4), (8, 1, 5)])
def test_chance_jaccard_is_the_mean_over_every_pair_of_masks(n, ka, kb):
    """Every pair of subsets of sizes ka and kb of n items, enumerated: the mean Jaccard, as a fraction."""
    total = Fraction(0)
    for a in itertools.combinations(range(n), ka):
        for b in itertools.combinations(range(n), kb):
            total += Fraction(len(set(a) & set(b)), len(set(a) | set(b)))
    assert masks.chance_jaccard(n, ka, kb) == pytest.approx(float(total / (comb(n, ka) * comb(n, kb))), rel=1e-9)


def synthetic_store():
    """Two criteria x two seeds x rounds 0-1 of one 2x4 layer "w" and a 1x4 layer "v"."""
    runs = pd.DataFrame([{"run_id": i, "seed": seed, "criterion": criterion, "mask1": "original", "mask0": "zero",
                          "arch": "lenet300_100", "iterations": 100}
                         for i, (criterion, seed) in enumerate(itertools.product(("large_final", "random"), (1, 2)),
                                                               start=1)])
    ones = {"w": np.ones(8, bool), "v": np.ones(4, bool)}
    round1 = {  # run id -> the masks of round 1 (5 of 8 and 2 of 4 kept)
        1: {"w": [1, 1, 1, 1, 1, 0, 0, 0], "v": [1, 1, 0, 0]},
        2: {"w": [1, 1, 1, 0, 0, 1, 1, 0], "v": [1, 0, 1, 0]},
        3: {"w": [0, 0, 0, 1, 1, 1, 1, 1], "v": [0, 0, 1, 1]},
        4: {"w": [1, 0, 1, 0, 1, 0, 1, 1], "v": [1, 1, 0, 0]},
    }
    stored = {**{(r, 0): ones for r in round1}, **{(r, 1): {k: np.array(v, bool) for k, v in m.items()}
                                                    for r, m in round1.items()}}
    return masks.from_arrays(runs, stored)


def test_overlaps_between_criteria_of_one_seed_by_hand():
    pairs = masks.overlaps(synthetic_store(), "criterion")
    got = {(r.run_a, r.run_b, r.round_a, r.layer): (r.intersection, r.union, r.jaccard)
           for r in pairs.itertuples(index=False)}
    # seed 1: runs 1 (large_final) and 3 (random); seed 2: runs 2 and 4. Round 0: full masks, Jaccard 1
    assert got == {
        (1, 3, 0, "v"): (4, 4, 1.0), (1, 3, 0, "w"): (8, 8, 1.0),
        (1, 3, 1, "v"): (0, 4, 0.0), (1, 3, 1, "w"): (2, 8, 2 / 8),
        (2, 4, 0, "v"): (4, 4, 1.0), (2, 4, 0, "w"): (8, 8, 1.0),
        (2, 4, 1, "v"): (1, 3, 1 / 3), (2, 4, 1, "w"): (3, 7, 3 / 7),
    }
    assert set(pairs["label"]) == {"large_final vs random"}
    row = pairs[(pairs.layer == "w") & (pairs.round_b == 1)].iloc[0]
    assert row.chance == pytest.approx(masks.chance_jaccard(8, 5, 5)) and row.percent_remaining == 5 / 8 * 100


def test_overlaps_between_seeds_and_consecutive_rounds_by_hand():
    store = synthetic_store()
    seeds = masks.overlaps(store, "seed")
    got = {(r.run_a, r.run_b, r.layer): r.jaccard for r in seeds.itertuples(index=False) if r.round_b == 1}
    assert got == {(1, 2, "w"): 3 / 7, (1, 2, "v"): 1 / 3, (3, 4, "w"): 3 / 7, (3, 4, "v"): 0 / 4}
    assert set(seeds["label"]) == {"large_final", "random"}  # each pair within one criterion
    rounds = masks.overlaps(store, "round")
    assert len(rounds) == 4 * 2 and (rounds[rounds.layer == "w"]["jaccard"] == 5 / 8).all()  # nested: 5 of 8
    assert (rounds[rounds.layer == "v"]["jaccard"] == 2 / 4).all()
    summary = masks.overlap_summary(seeds)
    assert summary[(summary.label == "random") & (summary.layer == "w") & (summary["round"] == 1)][
        "jaccard"].item() == 3 / 7
    fig = masks.overlap_figure(seeds)
    assert [ax.get_title() for ax in fig.axes] == ["v", "w"]
    lines = {line.get_label(): line for line in fig.axes[1].get_lines()}
    assert set(lines) == {"large_final", "random", "chance"}
    assert list(lines["random"].get_ydata()) == [3 / 7, 1.0]  # from 62.5% to 100% of the layer (x inverted)
    assert list(lines["chance"].get_ydata()) == pytest.approx([masks.chance_jaccard(8, 5, 5), 1.0])
    with pytest.raises(QueryError, match="no column 'lr' to pair runs by"):
        masks.overlaps(store, "lr")


# ------------------------------------------------------------------------------------------------ stored runs

SMALL = ["fast", "data.name=synthetic", "pruning.rounds=2", "training.iterations=60", "training.eval_every=20"]


RUNS = {  # name -> the run's config updates
    "zero": ["criterion.name=large_final", "treatment.mask0=zero", "seed=1"],
    "init": ["criterion.name=large_final", "treatment.mask0=init", "seed=1"],
    "random": ["criterion.name=random", "treatment.mask0=zero", "seed=1"],
    "seed2": ["criterion.name=large_final", "treatment.mask0=zero", "seed=2"],
    "no_artifacts": ["criterion.name=large_final_diff_sign", "seed=3", "save_artifacts=False"],
}


@pytest.fixture(scope="module")
def mask_db(db_server, tmp_path_factory):
    """large_final with mask-0 zero and init, random with zero (seed 1), large_final/zero seed 2, and one run
    without artifacts, through the command line (side by side); returns (spec, {name: run id})."""
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")), OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    spec = f"{db_server.address}:masks_db"
    runs = {name: subprocess.Popen([sys.executable, "-m", "experiments.lottery", "with", *SMALL, *extra, "-m", spec],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for name, extra in RUNS.items()}
    for name, process in runs.items():
        assert process.wait(timeout=600) == 0, process.stderr.read()[-2000:]
    ids = {}
    for doc in db_server.client()["masks_db"]["runs"].find({}, {"config": 1}):
        config = doc["config"]
        ids[next(name for name, extra in RUNS.items() if all(
            str(_config_value(config, update.split("=")[0])) == update.split("=")[1] for update in extra))] = doc["_id"]
    assert set(ids) == set(RUNS)
    return spec, ids


def _config_value(config: dict, path: str):
    for part in path.split("."):
        config = config[part]
    return config


def artifacts(db_server, run_id):
    import gridfs
    import torch

    db = db_server.client()["masks_db"]
    doc = db["runs"].find_one({"_id": run_id})
    fs = gridfs.GridFS(db)
    return {a["name"]: torch.load(io.BytesIO(fs.get(a["file_id"]).read()), weights_only=True)
            for a in doc["artifacts"]}


def test_masks_flips_and_mask0_prediction_from_stored_runs(mask_db, db_server):
    spec, ids = mask_db
    store = masks.load(spec)
    assert sorted(store.runs["run_id"]) == sorted(ids[n] for n in ("zero", "init", "random", "seed2"))
    init_run = ids["init"]
    stored = artifacts(db_server, init_run)  # large_final, mask-0 init
    for k in range(3):
        for layer, mask in stored[f"round_{k:02d}.pt"]["mask"].items():
            assert np.array_equal(store.masks[(init_run, k)][layer], mask.numpy().reshape(-1))
    init, final = stored["init.pt"], stored["round_02.pt"]["final"]
    layer = "fcs.1.weight"
    keep = stored["round_02.pt"]["mask"][layer]
    by_hand = int(((init[layer].sign() != final[layer].sign()) & keep).sum())
    flips = store.flips
    row = flips[(flips.run_id == init_run) & (flips["round"] == 2) & (flips.layer == layer)].iloc[0]
    assert (row.flipped, row.kept) == (by_hand, int(keep.sum()))
    assert store.runs.set_index("run_id").loc[init_run, "label"] == "large_final / init"

    prediction = masks.mask0_prediction(store).set_index(["run_id", "round"])
    assert prediction.loc[(init_run, 1), "distance"] == pytest.approx(1.0)  # init: frozen where they started
    assert prediction.loc[(init_run, 1), "alignment"] == 0 and prediction.loc[(init_run, 1), "zeroed_fraction"] == 0
    zero = artifacts(db_server, ids["zero"])  # large_final, mask-0 zero: round 1 by hand
    to_d, init_to_d, along, pruned = 0.0, 0.0, 0.0, 0
    for name, mask in zero["round_01.pt"]["mask"].items():
        d, w = zero["round_00.pt"]["final"][name][~mask].double(), zero["init.pt"][name][~mask].double()
        to_d, init_to_d = to_d + float((d ** 2).sum()), init_to_d + float(((w - d) ** 2).sum())
        along, pruned = along + float((-w * (d - w)).sum()), pruned + int((~mask).sum())
    assert prediction.loc[(ids["zero"], 1), "distance"] == pytest.approx(to_d / init_to_d, rel=1e-6)
    assert prediction.loc[(ids["zero"], 1), "alignment"] == pytest.approx(along / init_to_d, rel=1e-6)
    assert prediction.loc[(ids["zero"], 1), "zeroed_fraction"] == 1
    assert prediction.loc[(ids["zero"], 1), "pruned"] == pruned

    pairs = masks.overlaps(store, "criterion")
    assert set(pairs["run_a"]) | set(pairs["run_b"]) == {ids["zero"], ids["random"]}  # one seed, mask-0 zero
    one = pairs[(pairs["round_b"] == 1) & (pairs.layer == layer)].iloc[0]
    a, b = (artifacts(db_server, ids[name])["round_01.pt"]["mask"][layer] for name in ("zero", "random"))
    assert one.intersection == int((a & b).sum())
    assert one.jaccard == pytest.approx(int((a & b).sum()) / int((a | b).sum()))


def test_report_has_a_masks_section_when_runs_stored_masks(mask_db, tmp_path):
    result = run_cli("analysis", "report", "-m", mask_db[0], "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    report = (tmp_path / "report.md").read_text()
    assert "### What the masks are" in report
    for name in ("overlap_criterion", "overlap_mask0", "overlap_seed", "overlap_round", "sign_flips",
                 "mask0_prediction"):
        assert f"(masks/{name}.png)" in report, name
        assert (tmp_path / "masks" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pairs = pd.read_csv(tmp_path / "masks" / "overlap_seed.csv")
    assert set(pairs["label"]) == {"large_final / zero"} and (pairs["jaccard"] >= 0).all()


def test_no_masks_section_without_artifacts(mask_db, tmp_path):
    from analysis.report import write_report

    result = write_report(mask_db[0], None, tmp_path, where={"seed": 3})
    assert "### What the masks are" not in (tmp_path / "report.md").read_text()
    assert any("no completed run stored its masks" in note for note in result["notes"])
    with pytest.raises(QueryError, match="no completed lottery run in database 'masks_db' matching .* stored its "
                                         "masks"):
        masks.load(mask_db[0], where={"seed": 3})
