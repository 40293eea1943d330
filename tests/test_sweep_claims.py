"""Claims in the run database, against the real SecantusDB server: the atomic operations they rely on, and who may
take a claim when."""

from __future__ import annotations

import datetime
import subprocess
import sys
import threading

import pymongo
import pymongo.errors
import pytest

from experiments import claims


@pytest.fixture
def db(db_server, db_name):
    client = db_server.client()
    yield client[db_name]
    client.close()


def test_server_supports_the_atomic_operations_claims_rely_on(db):
    collection = db["probe"]
    inserted = collection.find_one_and_update({"_id": "c", "state": "FAILED"}, {"$set": {"state": "RUNNING"}},
                                              upsert=True, return_document=pymongo.ReturnDocument.BEFORE)
    assert inserted is None and collection.find_one({"_id": "c"})["state"] == "RUNNING"
    with pytest.raises(pymongo.errors.DuplicateKeyError):  # filter misses an existing _id: upsert collides
        collection.find_one_and_update({"_id": "c", "state": "FAILED"}, {"$set": {"state": "X"}}, upsert=True)
    assert collection.find_one({"_id": "c"})["state"] == "RUNNING"
    db["unique"].create_index([("key", 1)], unique=True)
    db["unique"].insert_one({"key": 1})
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        db["unique"].insert_one({"key": 1})


def test_sixteen_simultaneous_claims_have_one_winner(db):
    barrier, winners = threading.Barrier(16), []

    def contend(i):
        barrier.wait()
        taken, _ = claims.acquire(db, "cond", claims.holder(f"sweep/0/{i}"), stale_after=60)
        if taken:
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    claim = db["claims"].find_one({"_id": "cond"})
    assert claim["token"] == f"sweep/0/{winners[0]}" and claim["state"] == "RUNNING" and claim["attempts"] == 1


def test_a_live_claim_is_kept_a_stale_or_released_one_is_taken_over(db):
    assert claims.acquire(db, "c", claims.holder("a"), stale_after=60)[0]
    assert claims.acquire(db, "c", claims.holder("b"), stale_after=60) == (False, None)
    assert claims.beat(db, "c", "a") and not claims.beat(db, "c", "b")
    old = claims.utcnow() - datetime.timedelta(seconds=61)
    db["claims"].update_one({"_id": "c"}, {"$set": {"heartbeat": old, "host": "elsewhere"}})
    taken, before = claims.acquire(db, "c", claims.holder("b"), stale_after=60)
    assert taken and before["token"] == "a" and before["host"] == "elsewhere"
    assert not claims.beat(db, "c", "a"), "the old holder learns it lost the claim"
    claims.release(db, "c", "b", claims.FAILED, rc=1)
    taken, before = claims.acquire(db, "c", claims.holder("c"), stale_after=60)
    assert taken and before["state"] == "FAILED" and before["rc"] == 1
    assert db["claims"].find_one({"_id": "c"})["attempts"] == 3


def test_a_dead_holder_on_this_host_is_taken_over_at_once(db):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = {**claims.holder("dead"), "pid": gone.pid, "pid_started": 1.0}
    assert claims.acquire(db, "c", dead, stale_after=3600)[0]
    assert claims.is_claimable(db["claims"].find_one({"_id": "c"}), stale_after=3600)
    taken, before = claims.acquire(db, "c", claims.holder("alive"), stale_after=3600)
    assert taken and before["token"] == "dead"
    assert not claims.is_claimable(db["claims"].find_one({"_id": "c"}), stale_after=3600)  # we are alive
    assert claims.acquire(db, "c", claims.holder("third"), stale_after=3600) == (False, None)


def killed_hand_run(run_id=1, rounds=0, status="RUNNING", save_artifacts=True, heartbeat=None, seed=1) -> dict:
    """The run document a SIGKILL leaves of a lottery run started by hand (no claim): RUNNING, its heartbeat where
    the process died, ``rounds`` round records listed (the artifacts of later rounds may be stored too)."""
    from ticketlab.identity import condition_hash, point_hash

    config = {"seed": seed, "save_artifacts": save_artifacts, "arch": {"name": "lenet300_100"},
              "criterion": {"name": "large_final"}}
    return {"_id": run_id, "experiment": {"name": "lottery"}, "status": status, "config": config,
            "start_time": datetime.datetime(2026, 12, 4, 10, 0, 0), "heartbeat": heartbeat,
            "info": {"condition": condition_hash(config), "point": point_hash(config),
                     "rounds": [{"round": k, "final_hash": f"h{k}"} for k in range(rounds)]},
            "artifacts": [{"name": n} for n in ("init.pt", "round_00.pt", "round_01.pt")]}


def test_the_takeover_of_issue_25_decided_from_its_documents_and_timings(db):
    """Issue 25's bad case, step by step as the sweep's unit takes it: a run started by hand (no claim), SIGKILLed
    after round 1's artifact, before its round records reached ``info.rounds``; its last heartbeat at ``beat``.
    17 s later a sweep with --stale-after 15. The unit waits while the heartbeat is fresher than 15 s, then marks
    the run INTERRUPTED and resumes it, at round 0, in its own document; before the fix it started a second run."""
    beat = datetime.datetime(2026, 12, 4, 10, 0, 20)
    doc = killed_hand_run(heartbeat=beat)
    db["runs"].insert_one(doc)
    point = doc["info"]["point"]
    (run,) = claims.unfinished_runs(db, "lottery", point)
    seconds = lambda s: beat + datetime.timedelta(seconds=s)  # noqa: E731
    assert claims.run_alive(run, None, 15, now=seconds(14.9)), "a heartbeat fresher than --stale-after: waits"
    assert not claims.run_alive(run, None, 15, now=seconds(15.1))
    assert not claims.run_alive(run, None, 15, now=seconds(17))  # when the sweep of the issue looked
    assert claims.mark_dead(db, 1) and not claims.mark_dead(db, 1)
    (run,) = claims.unfinished_runs(db, "lottery", point)
    assert run["status"] == "INTERRUPTED"
    assert claims.takeover([run], "lottery", resumable=True) == \
        claims.Takeover(1, "resumed run 1 at round 0 (no finished round stored)")
    # the same run had its round 0 record listed: resumed after it
    db["runs"].update_one({"_id": 1}, {"$set": {"info.rounds": [{"round": 0}]}})
    assert claims.takeover(claims.unfinished_runs(db, "lottery", point), "lottery", True) == \
        claims.Takeover(1, "resumed run 1 after round 0")


def test_takeover_resumes_the_most_advanced_run_that_can_be_resumed(db):
    """Several dead runs of one point (e.g. a second run the old sweep started beside a killed one): the run with
    the most listed rounds (then the newest) that can be resumed; a new run only when none can, saying why."""
    runs = [killed_hand_run(1, rounds=0, status="INTERRUPTED"), killed_hand_run(2, rounds=2, save_artifacts=False),
            killed_hand_run(3, rounds=1, status="FAILED"), killed_hand_run(4, rounds=1, status="INTERRUPTED")]
    db["runs"].insert_many(runs)
    point = runs[0]["info"]["point"]
    found = claims.unfinished_runs(db, "lottery", point)
    assert [r["_id"] for r in found] == [2, 4, 3, 1]
    assert claims.takeover(found, "lottery", True) == claims.Takeover(4, "resumed run 4 after round 0")
    assert claims.takeover(found[:1], "lottery", True) == claims.Takeover(
        None, "started anew: run 2 ran with save_artifacts=False (its weights were not stored)")
    assert claims.takeover(found, "supermask", False) == claims.Takeover(
        None, "started anew: supermask runs do not resume (run 2 was left unfinished)")
    assert claims.takeover([], "lottery", True) is None
    db["runs"].update_one({"_id": 4}, {"$set": {"status": "COMPLETED"}})
    assert [r["_id"] for r in claims.unfinished_runs(db, "lottery", point)] == [2, 3, 1]
