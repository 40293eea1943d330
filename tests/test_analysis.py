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


def test_an_extra_seed_is_left_out_of_the_pairs_and_welch_only_when_asked(study_db):
    df = analysis.load_runs(*study_db)  # random has seed 4 too: no other criterion has it
    with pytest.warns(UserWarning, match="left out of the pairing by seed"):
        paired = analysis.compare(df, factor="criterion", baseline="random", metric="untrained_test_acc")
    on_three = analysis.compare(df[df["seed"] != 4], factor="criterion", baseline="random",
                                metric="untrained_test_acc")
    pd.testing.assert_frame_equal(paired, on_three)  # the same tests as without the extra seed
    assert set(paired["test"]) == {"paired t"} and set(paired["n_baseline"]) == {3}
    assert any("criterion=large_final vs random" in line and "seed 4: only one side has it" in line
               for line in paired.attrs["unpaired"])
    table = analysis.compare(df, factor="criterion", baseline="random", metric="untrained_test_acc", paired=False)
    assert set(table["test"]) == {"Welch t (unpaired, as asked)"} and set(table["round"]) == {0, 1, 2}
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
    result = run_cli("analysis", "report", "-m", f"{uri}/{db}", "--where", "seed=1,2,3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "[criteria] large_final" in result.stdout and "[supermask]" in result.stdout
    for name in ("study_criteria", "study_untrained", "early_stopping"):
        png, pdf = tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000, name
        assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 5_000, name
    table = pd.read_csv(tmp_path / "compare_criteria.csv")
    assert set(table["condition"]) == {"large_final", "magnitude_increase"}
    assert "| percent_remaining |" in (tmp_path / "compare_criteria.md").read_text()
    report = (tmp_path / "report.md").read_text()
    assert "![criteria](study_criteria.png)" in report and "![untrained](study_untrained.png)" in report
    assert "![early stopping](early_stopping.png)" in report
    line = next(x for x in result.stdout.splitlines() if "[criteria] large_final" in x)
    row = table[(table["condition"] == "large_final")].sort_values("percent_remaining").iloc[0]
    assert f"p={row['p']:.3g}, p_holm={row['p_holm']:.3g}" in line, line
    assert len(pd.read_csv(tmp_path / "runs.csv")) == 9 * 3


def test_colors_are_stable():
    assert figures.color("large_final") == figures.color("large_final") != figures.color("magnitude_increase")
    assert figures.color("my_new_criterion") == figures.color("my_new_criterion")


def test_cli_errors_exit_2(study_db, db_server, tmp_path):
    uri, db = study_db
    env = dict(os.environ, TICKETLAB_DB_TIMEOUT_MS="300")
    bad_uri = run_cli("analysis", "runs", "-m", "127.0.0.1:1:lottery", env=env)
    assert bad_uri.returncode == 2 and bad_uri.stderr.count("\n") == 1, bad_uri.stderr
    assert bad_uri.stderr.startswith("error: cannot reach the run database at mongodb://127.0.0.1:1 (database "
                                     "'lottery'; ServerSelectionTimeoutError: Connection refused)")
    empty = run_cli("analysis", "report", "-m", f"{db_server.address}:nothing_here", "--out", str(tmp_path))
    assert empty.returncode == 2 and "no lottery or supermask runs in database 'nothing_here'" in empty.stderr
    unknown = run_cli("analysis", "runs", "--mongo", uri, "--db", db, "--where", "colour=red")  # the older form
    assert unknown.returncode == 2 and "unknown key 'colour'" in unknown.stderr
    listing = run_cli("analysis", "runs", "-m", f"{db_server.address}:{db}")
    assert listing.returncode == 0 and "lottery runs (10)" in listing.stdout and "supermask runs (2)" in \
        listing.stdout
    ids = [int(line.split()[0]) for line in listing.stdout.split("supermask runs")[0].splitlines()[3:] if line]
    assert len(ids) == 10 and ids == sorted(ids), listing.stdout


def test_runs_of_a_plain_sacred_observer_are_read_and_deleted_runs_leave(db_server, db_name, tmp_path):
    """A run written by Sacred's own MongoObserver shows up; a deleted run disappears at once."""
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
    df = analysis.load_runs(uri, db_name)
    assert sorted(df["seed"].unique()) == [1, 2] and len(df) == 4
    db_server.client()[db_name]["runs"].delete_one({"config.seed": 2})
    assert list(analysis.load_runs(uri, db_name)["seed"].unique()) == [1]


# ------------------------------------------------------------------------------------------------ honest data

def _copy_runs(db_server, source_db: str, target_db: str, query: dict, edit=None, start_id: int = 1) -> list[int]:
    """Copy run documents the experiments wrote (another client writing): new ids, ``edit(doc)`` applied."""
    client = db_server.client()
    docs = list(client[source_db]["runs"].find({"experiment.name": "lottery", **query}).sort("_id", 1))
    ids = []
    for i, doc in enumerate(docs):
        doc["_id"] = start_id + i
        if edit:
            edit(doc)
        client[target_db]["runs"].insert_one(doc)
        ids.append(doc["_id"])
    return ids


def test_reads_are_exact_whatever_wrote_the_runs(study_db, db_server, db_name):
    """Another client's update, a delete plus an insert (same count), a RUNNING run: each read sees the database
    as it is at the time of the call (ticketlab's observer: study_db; Sacred's own observer: the test below)."""
    uri, source = study_db
    ids = _copy_runs(db_server, source, db_name, {"config.criterion.name": {"$in": ["large_final", "random"]},
                                                  "config.seed": {"$in": [1, 2, 3]}})
    runs = db_server.client()[db_name]["runs"]
    first = analysis.load_runs(uri, db_name)
    assert sorted(first["run_id"].unique()) == ids and set(first["status"]) == {"COMPLETED"}
    assert analysis.load_supermask_runs(uri, db_name, where={"data": "synthetic"}).empty  # none: no error
    runs.update_one({"_id": ids[0]}, {"$set": {"status": "FAILED", "info.rounds.1.test_acc": 0.123}})
    second = analysis.load_runs(uri, db_name)
    row = second[(second["run_id"] == ids[0]) & (second["round"] == 1)].iloc[0]
    assert row["status"] == "FAILED" and row["test_acc"] == 0.123
    moved = runs.find_one({"_id": ids[1]})
    runs.delete_one({"_id": ids[1]})
    runs.insert_one({**moved, "_id": 99, "status": "RUNNING", "info": {**moved["info"],
                                                                        "rounds": moved["info"]["rounds"][:1]}})
    third = analysis.load_runs(uri, db_name)
    assert ids[1] not in set(third["run_id"]) and third["run_id"].nunique() == len(ids)
    running = third[third["run_id"] == 99]
    assert list(running["status"]) == ["RUNNING"] and list(running["round"]) == [0]


def test_compare_refuses_runs_that_differ_in_any_condition_key(study_db, db_server, db_name):
    uri, source = study_db
    query = {"config.criterion.name": {"$in": ["large_final", "random"]}, "config.seed": {"$in": [1, 2, 3]}}
    _copy_runs(db_server, source, db_name, query)
    for start, (section, key, value) in enumerate((("training", "eval_every", 50), ("data", "val_size", 500),
                                                   ("data", "split_seed", 7)), start=1):
        def edit(doc, section=section, key=key, value=value):
            doc["config"][section][key] = value
        _copy_runs(db_server, source, db_name, query, edit, start_id=100 * start)
        df = analysis.load_runs(uri, db_name)
        with pytest.raises(ComparisonError) as error:
            analysis.compare(df[df["run_id"].isin([*range(1, 7), *range(100 * start, 100 * start + 6)])])
        message = str(error.value)
        assert "\n" not in message and f"differ in more than 'criterion' ({section}.{key}: " in message
        assert f"--where {section}.{key}=" in message
        db_server.client()[db_name]["runs"].delete_many({"_id": {"$gte": 100}})
    # the execution keys and the seed never split a condition
    df = analysis.load_runs(uri, db_name)
    assert df.groupby("criterion")["condition"].nunique().eq(1).all()


def test_report_compares_each_setting_apart(study_db, db_server, db_name, tmp_path):
    uri, source = study_db
    query = {"config.criterion.name": {"$in": ["large_final", "random"]}, "config.seed": {"$in": [1, 2, 3]}}
    _copy_runs(db_server, source, db_name, query)

    def edit(doc):
        doc["config"]["training"]["eval_every"] = 50
        doc["config"]["data"]["root"] = "/elsewhere"  # an execution key: no new setting
        for record in doc["info"]["rounds"]:
            record["test_acc"] -= 0.25
    _copy_runs(db_server, source, db_name, query, edit, start_id=100)
    result = run_cli("ticketlab", "report", "-m", f"{db_server.address}:{db_name}", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "report.md").read_text()
    for every in (25, 50):
        table = pd.read_csv(tmp_path / f"training.eval_every={every}" / "compare_criteria.csv")
        assert set(table["n"]) == {3} and set(table["n_baseline"]) == {3}
        assert f"![criteria | training.eval_every={every}](training.eval_every={every}/study_criteria.png)" in report
        assert f"[criteria | training.eval_every={every}] large_final" in result.stdout
    low = pd.read_csv(tmp_path / "training.eval_every=50" / "compare_criteria.csv")
    high = pd.read_csv(tmp_path / "training.eval_every=25" / "compare_criteria.csv")
    assert (high["mean"] - low["mean"]).round(9).eq(0.25).all(), "each setting's own runs, never pooled"
    assert not (tmp_path / "compare_criteria.csv").exists()


def test_schema_matches_what_the_experiments_write(study_db, db_server):
    """The records real lottery and Supermask runs stored are exactly the fields ticketlab.schema declares."""
    from ticketlab import schema

    _, source = study_db
    runs = db_server.client()[source]["runs"]
    lottery = runs.find_one({"experiment.name": "lottery"})
    supermask = runs.find_one({"experiment.name": "supermask"})
    for record in lottery["info"]["rounds"]:
        assert set(record) == set(schema.ROUND_FIELDS)
    assert set(lottery["info"]) - {"metrics"} == set(schema.LOTTERY_INFO)
    assert set(supermask["info"]) - {"metrics"} == set(schema.SUPERMASK_INFO)
    configs = {**schema.flatten(lottery["config"]), **schema.flatten(supermask["config"])}
    assert set(schema.CONFIG_COLUMNS.values()) <= set(configs), "every short column names a real config path"
    df = analysis.load_runs(*study_db)
    assert {schema.column_of(path) for path in schema.flatten(lottery["config"])} <= set(df.columns)
    assert set(schema.ROUND_FIELDS) <= set(df.columns)
    assert set(schema.SUPERMASK_FIELDS) <= set(analysis.load_supermask_runs(*study_db).columns)


def test_learning_curves_of_selected_runs(study_db, db_server):
    uri, db = study_db
    runs, curves = analysis.load_runs(uri, db, where={"criterion": "random", "seed": 1}, metrics=["val_acc"])
    (run_id,) = runs["run_id"].unique()
    stored = db_server.client()[db]["metrics"].find_one({"run_id": int(run_id), "name": "val_acc"})
    assert set(curves["name"]) == {"val_acc"} and set(curves["run_id"]) == {run_id}
    assert curves["step"].tolist() == stored["steps"] and curves["value"].tolist() == stored["values"]


def test_importing_analysis_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = "import analysis, analysis.figures, analysis.report, matplotlib; print(matplotlib.get_backend())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MPLBACKEND="svg"))
    assert out.returncode == 0 and out.stdout.strip() == "svg", out.stderr
