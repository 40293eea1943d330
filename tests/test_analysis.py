"""The analysis on runs the real experiments wrote to a real database server (fast configs, several seeds)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import analysis
from analysis import figures
from analysis.stats import ComparisonError
from tests.conftest import run_cli

FAST = ["fast", "data.name=synthetic", "pruning.rounds=2"]


@pytest.fixture(scope="module")
def study_db(db_server, tmp_path_factory):
    """Three criteria x seeds 1-3 through the sweep, one more random run (seed 4), two Supermask runs."""
    env = dict(os.environ, TICKETLAB_FAILURE_DIR=str(tmp_path_factory.mktemp("failed")))
    spec = f"{db_server.address}:analysis_db"
    sweep = run_cli("experiments.sweep", "-m", spec, "--criteria", "large_final,random,magnitude_increase",
                    "--seeds", "1,2,3", "--workers", "2", "--logs", str(tmp_path_factory.mktemp("logs")),
                    "with", *FAST, env=env)
    assert sweep.returncode == 0, sweep.stderr
    for args in (("experiments.lottery", "with", *FAST, "criterion.name=random", "seed=4"),
                 ("experiments.supermask", "with", "fast", "data.name=synthetic", "seed=1"),
                 ("experiments.supermask", "with", "fast", "data.name=synthetic", "seed=2")):
        result = run_cli(*args, "-m", spec, env=env)
        assert result.returncode == 0, result.stderr
    return f"mongodb://{db_server.address}", "analysis_db"


def test_frame_matches_the_documents(study_db, db_server):
    uri, db = study_db
    df = analysis.load_runs(uri, db)
    docs = list(db_server.client()[db]["runs"].find({"experiment.name": "lottery"}))
    assert len(docs) == 10 and df.shape[0] == 10 * 3
    for doc in docs:
        rows = df[df["run_id"] == doc["_id"]].sort_values("round")
        assert list(rows["criterion"].unique()) == [doc["config"]["criterion"]["name"]]
        assert list(rows["seed"].unique()) == [doc["config"]["seed"]]
        for (_, row), record in zip(rows.iterrows(), doc["info"]["rounds"]):
            for key in ("round", "percent_remaining", "test_acc", "val_acc", "final_test_acc",
                        "untrained_test_acc", "early_stop_iteration", "init_hash", "final_hash"):
                assert row[key] == record[key], key
    assert set(df["mask1"]) == {"original"} and set(df["arch"]) == {"lenet300_100"}
    assert df.groupby("criterion")["condition"].nunique().eq(1).all()
    assert df["condition"].nunique() == 3


def test_where_filters_are_exact(study_db):
    uri, db = study_db
    assert analysis.load_runs(uri, db, where={"criterion": ["large_final", "random"]})["run_id"].nunique() == 7
    assert analysis.load_runs(uri, db, where={"criterion": "random", "seed": 4})["run_id"].nunique() == 1
    assert analysis.load_runs(uri, db, where={"criterion": "large"}).empty, "no substring matches"
    assert analysis.load_runs(uri, db, where={"training.lr": 0.0012})["run_id"].nunique() == 10
    with pytest.raises(analysis.QueryError, match="unknown key 'learning_rate'"):
        analysis.load_runs(uri, db, where={"learning_rate": 0.1})


def test_supermask_frame(study_db):
    sm = analysis.load_supermask_runs(*study_db)
    assert len(sm) == 2 and set(sm["seed"]) == {1, 2}
    assert sm["test_acc_mean"].between(0, 1).all() and sm["expected_density"].between(0, 1).all()


def _groups(df, condition, percent):
    at = df[np.isclose(df["percent_remaining"], percent)]
    return at[at["criterion"] == condition].sort_values("seed"), at[at["criterion"] == "random"].sort_values("seed")


def test_paired_t_test_equals_scipy(study_db):
    df = analysis.load_runs(*study_db, where={"seed": [1, 2, 3]})
    with pytest.warns(UserWarning, match="2 comparison\\(s\\) left out"):
        table = analysis.compare(df, factor="criterion", baseline="random", metric="test_acc")
    assert set(table["test"]) == {"paired t"} and set(table["round"]) == {1, 2}
    for row in table.itertuples():
        a, b = _groups(df, row.condition, row.percent_remaining)
        expected = scipy_stats.ttest_rel(a["test_acc"], b["test_acc"])
        assert row.p == pytest.approx(expected.pvalue, rel=1e-9)
        assert row.t == pytest.approx(expected.statistic, rel=1e-9)
        diffs = a["test_acc"].to_numpy() - b["test_acc"].to_numpy()
        half = scipy_stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
        assert (row.ci_low, row.ci_high) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
        assert row.n == row.n_baseline == 3
    # Holm across the two conditions of one percentage
    for _, at in table.groupby("percent_remaining"):
        p = np.sort(at["p"].to_numpy())
        holm = np.minimum(1, np.maximum.accumulate(p * np.array([2, 1])))
        assert np.sort(at["p_holm"].to_numpy()) == pytest.approx(holm)
    # round 0 does not depend on the criterion: identical runs, no test, and it says so
    assert any("100% remaining" in s and "constant" in s for s in table.attrs["skipped"])


def test_welch_t_test_equals_scipy_when_seeds_differ(study_db):
    df = analysis.load_runs(*study_db)  # random has seed 4 too: the groups do not pair
    table = analysis.compare(df, factor="criterion", baseline="random", metric="untrained_test_acc")
    assert set(table["test"]) == {"Welch t"} and set(table["round"]) == {0, 1, 2}
    for row in table.itertuples():
        a, b = _groups(df, row.condition, row.percent_remaining)
        expected = scipy_stats.ttest_ind(a["untrained_test_acc"], b["untrained_test_acc"], equal_var=False)
        assert row.p == pytest.approx(expected.pvalue, rel=1e-9)
        assert (row.n, row.n_baseline) == (3, 4)


def test_comparison_guards(study_db):
    df = analysis.load_runs(*study_db, where={"seed": [1, 2, 3]})
    mixed = df.copy()
    mixed.loc[mixed["run_id"] == mixed["run_id"].iloc[0], "arch"] = "conv2"
    with pytest.raises(ComparisonError, match="differ in more than 'criterion' \\(arch: conv2, lenet300_100\\)"):
        analysis.compare(mixed)
    with pytest.raises(ComparisonError, match="a t-test needs 2 or more"):
        analysis.compare(df[df["seed"] == 1])
    with pytest.raises(ComparisonError, match="baseline criterion='small_init' has no runs; criterion values "
                                              "present: large_final, magnitude_increase, random"):
        analysis.compare(df, baseline="small_init")
    constant = df.assign(test_acc=0.5)
    with pytest.raises(ComparisonError, match="constant"):
        analysis.compare(constant)


def test_report_writes_tables_and_figures(study_db, tmp_path):
    uri, db = study_db
    result = run_cli("analysis", "report", "--mongo", uri, "--db", db, "--where", "seed=1,2,3", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "[criteria] large_final" in result.stdout and "[supermask]" in result.stdout
    for name in ("study_criteria", "study_untrained", "early_stopping"):
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, name
        assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 5_000, name
    table = pd.read_csv(tmp_path / "compare_criteria.csv")
    assert set(table["condition"]) == {"large_final", "magnitude_increase"}
    assert "| percent_remaining |" in (tmp_path / "compare_criteria.md").read_text()
    assert "study_criteria.png" in (tmp_path / "report.md").read_text()
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 9 * 3


def test_colors_are_stable():
    assert figures.color("large_final") == figures.color("large_final") != figures.color("magnitude_increase")
    assert figures.color("my_new_criterion") == figures.color("my_new_criterion")


def test_cli_errors_exit_2(study_db, db_server, tmp_path):
    uri, db = study_db
    bad_uri = run_cli("analysis", "runs", "--mongo", "127.0.0.1:1", "--db", db)
    assert bad_uri.returncode == 2 and "cannot reach the run database at '127.0.0.1:1'" in bad_uri.stderr
    empty = run_cli("analysis", "report", "--mongo", uri, "--db", "nothing_here", "--out", str(tmp_path))
    assert empty.returncode == 2 and "no lottery or supermask runs in database 'nothing_here'" in empty.stderr
    unknown = run_cli("analysis", "runs", "--mongo", uri, "--db", db, "--where", "colour=red")
    assert unknown.returncode == 2 and "unknown key 'colour'" in unknown.stderr
    listing = run_cli("analysis", "runs", "--mongo", uri, "--db", db)
    assert listing.returncode == 0 and "lottery runs (10)" in listing.stdout and "supermask runs (2)" in \
        listing.stdout


def test_run_index_round_trips_exactly():
    from analysis import run_index

    records = [{"round": k, "acc": 0.5 + k / 7, "hash": f"{k:064x}", "same": "x", "maybe": None if k else 1.5,
                "flag": bool(k % 2), "text": f"r{k}", "big": 2 ** 70} for k in range(5)]
    decoded = run_index.decode_table(run_index.encode_table(records))
    assert decoded == {key: [r[key] for r in records] for key in records[0]}
    assert all(type(a) is type(b) for key in decoded for a, b in zip(decoded[key], [r[key] for r in records]))


def test_runs_of_a_plain_sacred_observer_are_indexed_and_deleted_runs_leave(db_server, db_name, tmp_path):
    """A run written by Sacred's own MongoObserver (no index entry) shows up; a deleted run disappears."""
    from sacred.observers import MongoObserver

    from experiments.lottery import ex

    observer = MongoObserver(url=db_server.address, db_name=db_name, failure_dir=str(tmp_path))
    ex.observers.append(observer)
    try:
        for seed in (1, 2):
            ex.run(named_configs=["fast"], config_updates={"data": {"name": "synthetic"}, "seed": seed,
                                                             "pruning": {"rounds": 1}, "save_artifacts": False})
    finally:
        ex.observers.remove(observer)
    uri = f"mongodb://{db_server.address}"
    assert db_server.client()[db_name]["run_index"].count_documents({}) == 0
    df = analysis.load_runs(uri, db_name)
    assert sorted(df["seed"].unique()) == [1, 2] and len(df) == 4
    db_server.client()[db_name]["runs"].delete_one({"config.seed": 2})
    assert list(analysis.load_runs(uri, db_name)["seed"].unique()) == [1]
