"""S3StateStore passes the state-store contract against a real S3 client over real HTTP (moto's server
on loopback, see tests/_s3.py), and keeps S3's own semantics: conditional writes, leases that expire.
Integration tier: a real server and real processes over HTTP (~25 s), not pure logic."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
import uuid
from pathlib import Path

import botocore.exceptions
import pytest

from mlops_ray.errors import LockBusyError
from mlops_ray.state import S3StateStore
from tests._s3 import ACCESS
from tests.unit.state.contract import _MP, JOIN_S, AbstractStateStoreTests, _hold_lock_worker, _join_all, _start

pytestmark = pytest.mark.integration

LEASE_S = 5.0  # the contract's tests: long enough that a loaded machine never delays a renewal past it
EXPIRY_LEASE_S = 3.0  # the expiry test: short to keep it fast, renewed every 1 s while its holder lives


@pytest.fixture
def make_store(s3_server, s3_bucket):
    prefix = f"t/{uuid.uuid4().hex[:12]}"  # a fresh prefix per test: an empty store

    def make(lease_s: float = LEASE_S) -> S3StateStore:
        return S3StateStore(s3_bucket, prefix, endpoint_url=s3_server.endpoint_url, lease_s=lease_s, **ACCESS)

    return make


class TestS3StateStore(AbstractStateStoreTests):
    @pytest.fixture
    def store(self, make_store):
        return make_store()

    def test_lock_of_a_killed_holder_can_be_taken(self, make_store, tmp_path):
        """S3 cannot see a holder die: its lease runs out (``lease_s`` after its last renewal), then another
        process takes the lock over. This replaces the contract's "free at once" for lease backends."""
        store = make_store(EXPIRY_LEASE_S)
        ready, waiting, go = _MP.Event(), _MP.Event(), _MP.Event()
        out = tmp_path / "waiter.json"
        holder = _start(_hold_lock_worker, store, "l/run.lock", "doomed", ready)
        waiter = _start(
            _wait_for_lock_worker, store, "l/run.lock", str(out), waiting, go
        )  # started now: no spawn delay later
        try:
            assert ready.wait(JOIN_S), "the holder process never took the lock"
            assert waiting.wait(JOIN_S), "the waiter process never started"
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            killed_at = time.time()
            go.set()
            holder.join(JOIN_S)
        assert holder.exitcode == -signal.SIGKILL
        _join_all([waiter])
        seen = json.loads(out.read_text())
        assert seen["busy"] and set(seen["busy"]) == {"doomed"}, seen  # held by the dead holder's lease ...
        waited = seen["acquired_at"] - killed_at
        assert waited <= EXPIRY_LEASE_S + 2.0, waited  # ... until it ran out (lease_s after the last renewal)


def _wait_for_lock_worker(store, key: str, out: str, waiting, go) -> None:
    """Wait for ``go``, then try the lock until it is free: the holders that refused it and when it came."""
    store.exists(key)  # the client made (boto3 imported) before the clock starts
    waiting.set()
    go.wait(JOIN_S)
    busy = []
    deadline = time.monotonic() + JOIN_S
    while time.monotonic() < deadline:
        try:
            with store.lock(key, holder="waiter"):
                acquired_at = time.time()
            break
        except LockBusyError as err:
            busy.append(err.holder)
            time.sleep(0.05)
    Path(out).write_text(json.dumps({"busy": busy, "acquired_at": acquired_at}))


# ------------------------------------------------------------------ S3 semantics
def test_keys_are_objects_under_the_prefix(make_store, s3_server, s3_bucket):
    store = make_store()
    store.write_json("drift/churn.json", {"n": 1})
    obj = s3_server.client().get_object(Bucket=s3_bucket, Key=f"{store.prefix}/drift/churn.json")
    assert json.loads(obj["Body"].read()) == {"n": 1}
    assert store.uri == f"s3://{s3_bucket}/{store.prefix}" and store.local_path("drift/churn.json") is None


def test_server_refuses_a_write_with_a_wrong_etag(make_store, s3_server, s3_bucket):
    store = make_store()
    store.write_bytes("c", b"v1")
    key = f"{store.prefix}/c"
    with pytest.raises(botocore.exceptions.ClientError) as info:
        s3_server.client().put_object(Bucket=s3_bucket, Key=key, Body=b"x", IfMatch='"0123456789abcdef"')
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert store._put("c", b"x", if_match='"0123456789abcdef"') is None  # the store reads 412 as "not set"
    assert store.read_bytes("c") == b"v1"


def test_compare_and_set_loses_to_a_write_between_its_read_and_its_put(make_store, monkeypatch):
    """The check is the server's (If-Match on the ETag read), not the client's: a writer that gets in between
    the store's GET and its PUT makes the compare-and-set fail and keeps its own value."""
    store, other = make_store(), make_store()
    store.write_bytes("c", b"v1")
    real_get = store._get

    def get_then_someone_writes(key):
        got = real_get(key)
        other.write_bytes(key, b"theirs")
        return got

    monkeypatch.setattr(store, "_get", get_then_someone_writes)
    assert store.compare_and_set("c", b"v1", b"mine") is False
    assert other.read_bytes("c") == b"theirs"


def test_append_retries_when_another_append_gets_in_between(make_store, monkeypatch):
    store, other = make_store(), make_store()
    store.append_record("h.jsonl", {"i": 0})
    real_get, calls = store._get, []

    def get_then_someone_appends(key):
        got = real_get(key)
        if not calls:
            other.append_record(key, {"i": "other"})
        calls.append(key)
        return got

    monkeypatch.setattr(store, "_get", get_then_someone_appends)
    store.append_record("h.jsonl", {"i": 1})
    assert len(calls) == 2  # the first conditional PUT was refused, the second read saw the other append
    assert other.read_records("h.jsonl") == [{"i": 0}, {"i": "other"}, {"i": 1}]


def test_a_held_lease_is_renewed_past_its_length(make_store):
    store = make_store(lease_s=1.2)
    with store.lock("l", holder="long job"):
        time.sleep(2.5)  # > 2 leases: only renewals (every 0.4 s) keep it
        with pytest.raises(LockBusyError) as info:
            with store.lock("l", holder="late"):
                pass
        assert info.value.holder == "long job"
    with store.lock("l", holder="late"):  # released on exit, not left to expire
        pass


def test_lock_object_records_holder_expiry_and_token(make_store):
    store = make_store()
    with store.lock("l", holder="pid 7", lease_s=30):
        rec = store.read_json("l")
        assert rec["holder"] == "pid 7" and len(rec["token"]) == 32
        assert 25 < rec["expires_at"] - time.time() <= 30
    assert store.read_json("l") == {"holder": None, "expires_at": 0, "token": None}


def test_a_holder_whose_lease_was_taken_over_leaves_the_new_lease_alone(make_store):
    store = make_store()
    with store.lock("l", holder="slow", lease_s=30):
        # the slow holder's lease is made to look expired (as if it had been paused past it)
        store.write_json("l", {**store.read_json("l"), "expires_at": time.time() - 1})
        taker = make_store()
        cm = taker.lock("l", holder="taker", lease_s=30)
        cm.__enter__()
    try:
        assert store.read_json("l")["holder"] == "taker"  # the slow holder's release did not free it
        with pytest.raises(LockBusyError):
            with store.lock("l", holder="third"):
                pass
    finally:
        cm.__exit__(None, None, None)


def test_expired_lease_is_taken_by_one_of_two_contenders(make_store):
    store = make_store()
    store.write_json("l", {"holder": "dead", "expires_at": time.time() - 1, "token": "t"})
    stale = store._get("l")[1]
    with store.lock("l", holder="first"):
        # a second contender that read the same stale lease loses its conditional takeover
        assert store._put("l", b'{"holder": "second"}', if_match=stale) is None
        assert store.read_json("l")["holder"] == "first"


def test_store_pickles_to_the_same_place(make_store):
    store = make_store(lease_s=7.0)
    store.write_bytes("k", b"v")
    copy = pickle.loads(pickle.dumps(store))
    assert (copy.bucket, copy.prefix, copy.endpoint_url, copy.lease_s) == (
        store.bucket,
        store.prefix,
        store.endpoint_url,
        7.0,
    )
    assert copy.read_bytes("k") == b"v"


def test_bad_arguments_are_refused(s3_server):
    with pytest.raises(ValueError):
        S3StateStore("bucket/with/slash")
    with pytest.raises(ValueError):
        S3StateStore("b", "a/../b")
    with pytest.raises(ValueError):
        S3StateStore("b", lease_s=0)
