"""One way to name a run database in every command, and a password that is never stored, logged or printed."""

from __future__ import annotations

import os

import pymongo.errors
import pytest

from tests.conftest import run_cli
from ticketlab import cli, dbspec

PASSWORD = "s3cret-Pw"
FAST = ["fast", "data.name=synthetic", "pruning.rounds=0", "training.iterations=50", "save_artifacts=False"]


def test_the_three_forms_and_the_environment(monkeypatch):
    monkeypatch.delenv(dbspec.URI_VARIABLE, raising=False)
    assert dbspec.parse("127.0.0.1:27017:lottery") == dbspec.DbSpec("mongodb://127.0.0.1:27017", "lottery")
    uri = f"mongodb://me:{PASSWORD}@db.lab:27017/lottery?authSource=admin"
    assert dbspec.parse(uri) == dbspec.DbSpec(uri, "lottery")
    assert dbspec.parse("lottery") == dbspec.DbSpec("mongodb://localhost:27017", "lottery")
    assert dbspec.parse("127.0.0.1:27017:lottery").uri_with_db == "mongodb://127.0.0.1:27017/lottery"
    monkeypatch.setenv(dbspec.URI_VARIABLE, uri)
    assert dbspec.parse(None) == dbspec.parse("") == dbspec.DbSpec(uri, "lottery")
    assert dbspec.parse("other").db_name == "other" and dbspec.parse("other").url == uri
    for bad, says in (("no spaces", "is not valid; use HOST:PORT:DB"), ("mongodb://h:1/", "names no database")):
        with pytest.raises(dbspec.DbSpecError, match=says):
            dbspec.parse(bad)
    shown = dbspec.parse(uri)
    assert PASSWORD not in repr(shown) and PASSWORD not in shown.display and "me:***@db.lab" in shown.display
    assert dbspec.scrub(f"-m {uri} and mongodb://a:{PASSWORD}@c/d") == \
        "-m mongodb://me:***@db.lab:27017/lottery?authSource=admin and mongodb://a:***@c/d"


@pytest.fixture
def auth_uri(db_server, db_name):
    """A user with a password on the real server; the URI every command gets."""
    try:
        db_server.client().admin.command("createUser", "tl_user", pwd=PASSWORD, roles=["root"])
    except pymongo.errors.OperationFailure:
        pass  # created by an earlier test of this session
    return f"mongodb://tl_user:{PASSWORD}@{db_server.address}/{db_name}?authSource=admin"


def test_every_command_takes_a_uri_and_the_password_never_shows(auth_uri, db_server, db_name, ticketlab_env,
                                                                 tmp_path):
    by_option = run_cli("experiments.lottery", "with", *FAST, "seed=1", "-m", auth_uri, env=ticketlab_env)
    assert by_option.returncode == 0, by_option.stderr
    env = dict(ticketlab_env, **{dbspec.URI_VARIABLE: auth_uri})
    by_env = run_cli("experiments.lottery", "with", *FAST, "seed=2", env=env)
    assert by_env.returncode == 0, by_env.stderr
    members = run_cli("ticketlab", "population", "--members", "seed=3; seed=4", "with", *FAST, env=env)
    assert members.returncode == 0 and "population: 2 of 2 members completed" in members.stdout, members.stderr
    docs = list(db_server.client()[db_name]["runs"].find())
    assert sorted(d["config"]["seed"] for d in docs) == [1, 2, 3, 4] and all(d["status"] == "COMPLETED" for d in docs)
    assert docs[0]["meta"]["options"]["--mongo_db"] == auth_uri.replace(PASSWORD, "***")
    listing = run_cli("ticketlab", "runs", env=env)  # no -m: $TICKETLAB_MONGO_URI
    upload = run_cli("ticketlab", "upload", "-m", auth_uri, "--failure-dir", str(tmp_path / "none"), env=env)
    down = run_cli("ticketlab", "runs", "-m", auth_uri.replace(db_server.address, "127.0.0.1:1"),
                   env=dict(env, TICKETLAB_DB_TIMEOUT_MS="300"))
    assert listing.returncode == 0 and "lottery runs (4)" in listing.stdout, listing.stderr
    assert upload.returncode == 0 and "no runs waiting" in upload.stdout
    assert down.returncode == 2 and down.stderr.count("\n") == 1 and "Topology" not in down.stderr
    assert "cannot reach the run database at mongodb://tl_user:***@127.0.0.1:1/" in down.stderr
    for text in (str(docs), *(r.stdout + r.stderr for r in (by_option, by_env, members, listing, upload, down))):
        assert PASSWORD not in text
    wrong = run_cli("experiments.lottery", "with", *FAST, "-m", "not a spec", env=ticketlab_env)
    assert wrong.returncode != 0 and "database spec 'not a spec' is not valid; use HOST:PORT:DB" in wrong.stderr
    assert db_server.client()[db_name]["runs"].count_documents({}) == 4


def test_the_ticketlab_command_has_help_for_each_command(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("study", "sweep", "population", "questions", "resume", "runs", "report", "omniboard", "db", "upload",
                 "status"):
        assert f"\n  {name} " in listed
        assert cli.main([name, "--help"]) == 0, name
        assert f"usage: ticketlab {name} " in capsys.readouterr().out, name
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'; valid choices: study, sweep" in \
        capsys.readouterr().err
    assert os.path.isfile(os.path.join(os.path.dirname(cli.__file__), "__main__.py"))
