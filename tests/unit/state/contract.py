"""The state-store contract, in the style of fsspec's ``fsspec/tests/abstract``: one suite every backend passes.

A backend's test module subclasses the ``Abstract*`` classes and overrides the ``store`` fixture
(see ``test_local.py``). The store must be picklable: the race tests send it to worker processes
(real ones, started by ``spawn``, so nothing is shared but the backend itself).
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from mlops_ray.errors import LockBusyError

_MP = multiprocessing.get_context("spawn")
JOIN_S = 30.0


def _start(target, *args):
    p = _MP.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def _join_all(procs) -> None:
    for p in procs:
        p.join(JOIN_S)
    stuck = [p.pid for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
    assert not stuck, f"worker processes {stuck} did not finish in {JOIN_S:.0f}s"
    assert [p.exitcode for p in procs] == [0] * len(procs), [p.exitcode for p in procs]


def _log_event(path: str, text: str) -> None:
    """One line appended to a plain file shared by the workers: the independent witness of the lock."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (text + "\n").encode())
    finally:
        os.close(fd)


# ------------------------------------------------------------------ workers (module level: spawn imports them)
def _append_worker(store, key: str, worker: int, n: int, go) -> None:
    go.wait(JOIN_S)  # a barrier: every worker starts together
    for i in range(n):
        store.append_record(key, {"worker": worker, "i": i, "pad": "x" * (64 * (i % 7))})


def _increment_worker(store, key: str, n: int, go) -> None:
    go.wait(JOIN_S)  # a barrier: every worker starts together
    for _ in range(n):
        while True:
            old = store.read_bytes(key)
            if store.compare_and_set(key, old, str(int(old) + 1).encode()):
                break


def _contend_worker(store, key: str, events: str, me: str, rounds: int, busy_out: str, go) -> None:
    go.wait(JOIN_S)  # a barrier: every worker starts together
    holders = []
    entered = 0
    while entered < rounds:
        try:
            with store.lock(key, holder=me):
                _log_event(events, f"enter {me}")
                time.sleep(0.002)
                _log_event(events, f"exit {me}")
            entered += 1
        except LockBusyError as err:
            holders.append(err.holder)
        time.sleep(0.0005)
    Path(busy_out).write_text(json.dumps(holders))


def _hold_lock_worker(store, key: str, holder: str, ready) -> None:
    with store.lock(key, holder=holder):
        ready.set()
        time.sleep(600)  # until killed


def _try_lock_worker(store, key: str, out: str) -> None:
    try:
        with store.lock(key, holder="child"):
            Path(out).write_text(json.dumps({"acquired": True}))
    except LockBusyError as err:
        Path(out).write_text(json.dumps({"acquired": False, "holder": err.holder}))


def _rewrite_worker(store, key: str, values: list[bytes], seconds: float, go) -> None:
    go.wait(JOIN_S)  # a barrier: every worker starts together
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        store.write_bytes(key, values[i % len(values)])
        i += 1


# ------------------------------------------------------------------ the contract
class AbstractStoreFixture:
    """The fixture a backend overrides: a fresh, empty store per test."""

    @pytest.fixture
    def store(self):
        raise NotImplementedError("a backend's test class overrides the `store` fixture")


class AbstractValueTests(AbstractStoreFixture):
    def test_missing_key_reads_none_and_does_not_exist(self, store):
        assert store.read_bytes("a/missing") is None
        assert not store.exists("a/missing")

    def test_write_then_read_returns_the_bytes(self, store):
        store.write_bytes("a/b/c.bin", b"\x00\xffhello")
        assert store.read_bytes("a/b/c.bin") == b"\x00\xffhello"
        assert store.exists("a/b/c.bin")

    def test_write_replaces_the_whole_value(self, store):
        store.write_bytes("k", b"a long first value")
        store.write_bytes("k", b"short")
        assert store.read_bytes("k") == b"short"

    def test_read_json_gives_default_when_missing_or_not_json(self, store):
        assert store.read_json("j.json") is None
        assert store.read_json("j.json", default={"d": 1}) == {"d": 1}
        store.write_bytes("j.json", b"{not json")
        assert store.read_json("j.json", default=[]) == []

    def test_write_json_round_trips_and_stringifies_unknown_types(self, store):
        when = datetime.datetime(2026, 1, 2, 3, 4, 5)
        store.write_json("j.json", {"n": 1, "l": [1.5, None], "when": when, "path": Path("/x/y")})
        assert store.read_json("j.json") == {"n": 1, "l": [1.5, None], "when": str(when), "path": "/x/y"}
        assert json.loads(store.read_bytes("j.json")) == store.read_json("j.json")

    def test_delete_removes_and_tolerates_missing(self, store):
        store.write_bytes("d/k", b"1")
        store.delete("d/k")
        assert not store.exists("d/k") and store.read_bytes("d/k") is None
        store.delete("d/k")
        store.delete("never/was/here")

    def test_list_gives_sorted_keys_by_string_prefix(self, store):
        for key in ("drift/m2.json", "drift/m1.json", "drift/sub/x.json", "pipeline/m1/history.jsonl", "top"):
            store.write_bytes(key, b"1")
        assert store.list("drift/") == ["drift/m1.json", "drift/m2.json", "drift/sub/x.json"]
        assert store.list("drift/m") == ["drift/m1.json", "drift/m2.json"]
        assert store.list("pipe") == ["pipeline/m1/history.jsonl"]
        assert store.list("nothing/") == []
        assert store.list("") == sorted(
            ["drift/m1.json", "drift/m2.json", "drift/sub/x.json", "pipeline/m1/history.jsonl", "top"]
        )

    def test_list_shows_only_keys_after_every_kind_of_write(self, store):
        store.write_bytes("a/v", b"1")
        store.compare_and_set("a/c", None, b"1")
        store.append_record("a/r.jsonl", {"x": 1})
        with store.lock("a/lock", holder="me"):
            pass
        store.write_bytes("a/gone", b"1")
        store.delete("a/gone")
        assert store.list("a/") == ["a/c", "a/lock", "a/r.jsonl", "a/v"]

    @pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "../up", "./a", "a/"])
    def test_malformed_keys_are_refused(self, store, key):
        with pytest.raises(ValueError):
            store.write_bytes(key, b"1")

    def test_uri_names_the_store(self, store):
        assert isinstance(store.uri, str) and "://" in store.uri


class AbstractCompareAndSetTests(AbstractStoreFixture):
    def test_expected_none_sets_only_an_absent_key(self, store):
        assert store.compare_and_set("c", None, b"first") is True
        assert store.compare_and_set("c", None, b"second") is False
        assert store.read_bytes("c") == b"first"

    def test_matching_expected_replaces(self, store):
        store.write_bytes("c", b"v1")
        assert store.compare_and_set("c", b"v1", b"v2") is True
        assert store.read_bytes("c") == b"v2"

    def test_stale_expected_changes_nothing(self, store):
        store.write_bytes("c", b"v2")
        assert store.compare_and_set("c", b"v1", b"v3") is False
        assert store.read_bytes("c") == b"v2"

    def test_expected_value_on_a_missing_key_fails(self, store):
        assert store.compare_and_set("c", b"v1", b"v2") is False
        assert not store.exists("c")

    def test_processes_incrementing_a_counter_lose_no_increment(self, store):
        workers, n = 2, 60
        store.write_bytes("counter", b"0")
        go = _MP.Barrier(workers)
        procs = [_start(_increment_worker, store, "counter", n, go) for _ in range(workers)]
        _join_all(procs)
        assert int(store.read_bytes("counter")) == workers * n


class AbstractRecordTests(AbstractStoreFixture):
    def test_missing_key_has_no_records(self, store):
        assert store.read_records("h.jsonl") == []

    def test_records_come_back_oldest_first(self, store):
        for i in range(5):
            store.append_record("p/h.jsonl", {"i": i, "text": "line\nbreak"})
        assert store.read_records("p/h.jsonl") == [{"i": i, "text": "line\nbreak"} for i in range(5)]
        assert len(store.read_bytes("p/h.jsonl").splitlines()) == 5  # one line per record

    def test_unreadable_lines_are_skipped(self, store):
        store.write_bytes("h.jsonl", b'{"i": 0}\nnot json\n[1, 2]\n{"i": 1')  # a torn last line
        store.append_record("h.jsonl", {"i": 2})
        assert store.read_records("h.jsonl") == [{"i": 0}, {"i": 2}]

    def test_processes_appending_at_once_lose_and_interleave_nothing(self, store):
        workers, n = 4, 40
        go = _MP.Barrier(workers)
        procs = [_start(_append_worker, store, "race/h.jsonl", w, n, go) for w in range(workers)]
        _join_all(procs)
        lines = store.read_bytes("race/h.jsonl").splitlines()
        parsed = [json.loads(line) for line in lines]  # every line parses: nothing interleaved
        assert sorted((r["worker"], r["i"]) for r in parsed) == [(w, i) for w in range(workers) for i in range(n)]
        for w in range(workers):  # each writer's records keep its order
            assert [r["i"] for r in parsed if r["worker"] == w] == list(range(n))


class AbstractLockTests(AbstractStoreFixture):
    def test_a_second_holder_is_refused_at_once_and_told_the_holder(self, store):
        with store.lock("l/run.lock", holder="pid 1 since noon"):
            t0 = time.monotonic()
            with pytest.raises(LockBusyError) as info:
                with store.lock("l/run.lock", holder="pid 2"):
                    pytest.fail("entered a held lock")
            assert time.monotonic() - t0 < 2.0
        assert info.value.holder == "pid 1 since noon"
        assert "pid 1 since noon" in str(info.value)

    def test_lock_is_free_after_exit_and_after_an_exception(self, store):
        with store.lock("l", holder="a"):
            pass
        with pytest.raises(RuntimeError):
            with store.lock("l", holder="b"):
                raise RuntimeError("boom")
        with store.lock("l", holder="c"):
            pass

    def test_lease_is_accepted(self, store):
        with store.lock("l", holder="a", lease_s=30.0):
            with pytest.raises(LockBusyError):
                with store.lock("l", holder="b", lease_s=30.0):
                    pass

    def test_other_process_is_refused_and_named_the_holder(self, store, tmp_path):
        out = tmp_path / "child.json"
        with store.lock("l/run.lock", holder="parent pid 42"):
            _join_all([_start(_try_lock_worker, store, "l/run.lock", str(out))])
        assert json.loads(out.read_text()) == {"acquired": False, "holder": "parent pid 42"}
        _join_all([_start(_try_lock_worker, store, "l/run.lock", str(out))])
        assert json.loads(out.read_text()) == {"acquired": True}

    def test_contending_processes_are_never_inside_together(self, store, tmp_path):
        events, rounds = tmp_path / "events.log", 20
        names = ["worker-a", "worker-b"]
        go = _MP.Barrier(len(names))
        procs = [
            _start(_contend_worker, store, "l/run.lock", str(events), me, rounds, str(tmp_path / me), go)
            for me in names
        ]
        _join_all(procs)
        inside = None
        lines = events.read_text().splitlines()
        for line in lines:
            kind, who = line.split()
            if kind == "enter":
                assert inside is None, f"{who} entered while {inside} was inside"
                inside = who
            else:
                assert inside == who, f"{who} left but {inside} was inside"
                inside = None
        assert len(lines) == 2 * rounds * len(names)
        busy = {me: json.loads((tmp_path / me).read_text()) for me in names}
        assert sum(map(len, busy.values())) > 0, "the workers never contended: the test proves nothing"
        for me, holders in busy.items():
            other = next(n for n in names if n != me)
            assert set(holders) <= {other, "another process"}, holders
            assert holders.count(other) >= len(holders) // 2, holders  # mostly named, not anonymous

    def test_lock_of_a_killed_holder_can_be_taken(self, store):
        ready = _MP.Event()
        holder = _start(_hold_lock_worker, store, "l/run.lock", "doomed", ready)
        try:
            assert ready.wait(JOIN_S), "the holder process never took the lock"
            with pytest.raises(LockBusyError) as info:
                with store.lock("l/run.lock", holder="me"):
                    pass
            assert info.value.holder == "doomed"
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.join(JOIN_S)
        assert holder.exitcode == -signal.SIGKILL
        with store.lock("l/run.lock", holder="me"):
            pass


class AbstractAtomicityTests(AbstractStoreFixture):
    def test_reader_never_sees_a_partial_value_during_rewrites(self, store):
        size = 256 * 1024
        values = [bytes([c]) * size for c in b"abc"]
        store.write_bytes("big.bin", values[0])
        go = _MP.Barrier(2)
        writer = _start(_rewrite_worker, store, "big.bin", values, 1.0, go)
        go.wait(JOIN_S)
        seen, reads = set(), 0
        while writer.is_alive() or reads < 10:
            data = store.read_bytes("big.bin")
            assert data in values, f"partial or mixed value: {len(data)} bytes, starts {data[:8]!r}"
            seen.add(data[:1])
            reads += 1
        _join_all([writer])
        assert len(seen) > 1, "the reader saw no rewrite: the test proves nothing"


class AbstractStateStoreTests(
    AbstractValueTests, AbstractCompareAndSetTests, AbstractRecordTests, AbstractLockTests, AbstractAtomicityTests
):
    """The whole contract: a backend subclasses this (or the parts it implements) and overrides ``store``."""
