"""Registry lock and alias history under concurrency, on a real SQLite MLflow store (no Ray).

Concurrent alias moves used to allocate history sequence numbers as ``len(history) + 1``
without any lock, so racing moves overwrote each other's events.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
from conftest import RACE_MODEL

from mlops_ray.data.owner import ProcessOwner
from mlops_ray.errors import RegistryLockedError
from mlops_ray.registry import tracking

MODEL = RACE_MODEL


@pytest.fixture
def store(race_registry):
    """URI of a migrated SQLite MLflow store holding MODEL with 3 versions (tests/conftest.py)."""
    return race_registry


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, uri)


def _lock_exists(uri, name=MODEL) -> bool:
    return tracking._read_lock(_client(uri), tracking.lock_name(name)) is not None


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _plant_lock(uri, *, owner: dict | None, expires_in: float, token="planted"):
    """A lock record as another process would have left it."""
    now = time.time()
    record = {"token": token, "purpose": "promote v9", "owner": owner, "acquired": now - 5, "expires": now + expires_in}
    _client(uri).create_registered_model(tracking.lock_name(MODEL), tags={tracking.LOCK_TAG: json.dumps(record)})


def test_concurrent_alias_moves_keep_every_event_with_unique_consecutive_seqs(store):
    n = 12
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def move(i: int) -> None:
        client = _client(store)  # one client per thread, as separate commands would have
        barrier.wait()
        try:
            tracking.move_alias(client, MODEL, "challenger", str(1 + i % 3), action="register", reason=f"mover {i}")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=move, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    history = tracking.alias_history(_client(store), MODEL)
    assert sorted(e["reason"] for e in history) == sorted(f"mover {i}" for i in range(n)), "an event was lost"
    assert [e["seq"] for e in history] == list(range(1, n + 1))
    # each move saw the alias where the previous one left it: the history is one unbroken chain
    for prev, cur in zip(history, history[1:]):
        assert cur["from_version"] == prev["to_version"]
    assert history[0]["from_version"] is None
    assert str(tracking.alias_version(_client(store), MODEL, "challenger").version) == history[-1]["to_version"]
    assert not _lock_exists(store)


def test_lock_gives_mutual_exclusion_between_threads(store):
    inside = []
    overlaps = []
    order = []

    def worker(i: int) -> None:
        with tracking.registry_lock(_client(store), MODEL, purpose=f"worker {i}", wait_s=60):
            inside.append(i)
            if len(inside) > 1:
                overlaps.append(list(inside))
            order.append(i)
            time.sleep(0.05)
            inside.remove(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not overlaps and sorted(order) == list(range(6))
    assert not _lock_exists(store)


def test_lock_is_reentrant_in_one_thread_and_released_after_an_error(store):
    client = _client(store)
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.registry_lock(client, MODEL, purpose="outer"):
            # a move under a held lock (promote -> deploy -> move_alias) does not deadlock
            tracking.move_alias(client, MODEL, "champion", "1", action="promote", reason="r")
            assert _lock_exists(store)
            raise RuntimeError("boom")
    assert not _lock_exists(store)
    assert [e["to_version"] for e in tracking.alias_history(client, MODEL)] == ["1"]


def test_lock_held_by_a_live_process_times_out_with_a_clear_message(store):
    _plant_lock(store, owner=ProcessOwner.current().to_dict(), expires_in=3600)
    t0 = time.monotonic()
    with pytest.raises(RegistryLockedError) as exc:
        with tracking.registry_lock(_client(store), MODEL, purpose="promote v2", wait_s=1.0):
            pass
    assert 0.9 < time.monotonic() - t0 < 10
    msg = str(exc.value)
    assert "race-model" in msg and "promote v9" in msg and f"pid {ProcessOwner.current().pid}" in msg
    assert "race-model.lock" in msg  # says what to delete if the holder is gone
    assert _lock_exists(store)  # a live holder's lock is never broken


def test_lock_with_an_expired_lease_is_broken(store):
    other_host = {"host": "some-other-host", "pid": 1, "started": None, "namespace": ""}
    _plant_lock(store, owner=other_host, expires_in=-1)  # killed on another host, lease over
    with tracking.registry_lock(_client(store), MODEL, purpose="promote v2", wait_s=5):
        rec = tracking._read_lock(_client(store), tracking.lock_name(MODEL))
        assert rec.token != "planted" and rec.purpose == "promote v2"
    assert not _lock_exists(store)
    assert tracking._read_lock(_client(store), f"{MODEL}.lock.break") is None  # the breaker marker is gone too


def test_lock_of_a_dead_local_process_is_broken_before_its_lease_ends(store):
    dead = dict(ProcessOwner.current().to_dict(), pid=_dead_pid(), started=None)
    _plant_lock(store, owner=dead, expires_in=3600)
    t0 = time.monotonic()
    with tracking.registry_lock(_client(store), MODEL, purpose="promote v2", wait_s=5):
        pass
    assert time.monotonic() - t0 < 5
    assert not _lock_exists(store)


def test_lock_on_another_host_within_its_lease_is_not_broken(store):
    _plant_lock(store, owner={"host": "some-other-host", "pid": 1}, expires_in=3600)
    with pytest.raises(RegistryLockedError, match="some-other-host"):
        with tracking.registry_lock(_client(store), MODEL, purpose="promote v2", wait_s=0.5):
            pass
