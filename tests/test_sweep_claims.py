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
