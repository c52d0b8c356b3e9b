"""LocalStateStore passes the state-store contract, and keeps the workspace's on-disk layout."""

from __future__ import annotations

import pickle

import pytest
from contract import AbstractStateStoreTests

from mlops_ray.context import Context
from mlops_ray.state import LocalStateStore, StateStore


class TestLocalStateStore(AbstractStateStoreTests):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalStateStore(tmp_path / "root")


def test_key_is_the_file_under_the_root(tmp_path):
    store = LocalStateStore(tmp_path)
    store.write_json("drift/churn.json", {"n": 1})
    store.append_record("pipeline/churn/history.jsonl", {"status": "ok"})
    assert (tmp_path / "drift" / "churn.json").read_text() == '{"n": 1}'
    assert (tmp_path / "pipeline" / "churn" / "history.jsonl").read_text() == '{"status": "ok"}\n'
    assert store.local_path("drift/churn.json") == tmp_path / "drift" / "churn.json"
    assert store.uri == tmp_path.as_uri()


def test_files_written_before_the_store_are_read(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "serve-8000.json").write_text('{\n "pid": 7\n}')
    assert LocalStateStore(tmp_path).read_json("run/serve-8000.json") == {"pid": 7}


def test_lock_file_names_the_holder_while_held_and_is_empty_after(tmp_path):
    store = LocalStateStore(tmp_path)
    with store.lock("pipeline/churn/run.lock", holder="pid 9 since noon"):
        assert (tmp_path / "pipeline" / "churn" / "run.lock").read_text() == "pid 9 since noon"
    assert (tmp_path / "pipeline" / "churn" / "run.lock").read_text() == ""


def test_a_failed_write_leaves_the_old_value_and_no_temp_file(tmp_path):
    store = LocalStateStore(tmp_path)
    store.write_bytes("k", b"old")

    class Unwritable(bytes):
        def __bytes__(self):
            raise OSError("disk full")

    with pytest.raises(OSError):
        store.write_bytes("k", Unwritable(b"new"))
    assert store.read_bytes("k") == b"old"
    assert store.list("") == ["k"]


def test_store_pickles_to_the_same_root(tmp_path):
    store = pickle.loads(pickle.dumps(LocalStateStore(tmp_path)))
    assert isinstance(store, LocalStateStore) and store.root == tmp_path


def test_context_state_is_a_cached_local_store_of_the_workspace(tmp_path):
    ctx = Context.create(workspace=tmp_path / "ws")
    assert isinstance(ctx.state, StateStore) and ctx.state is ctx.state
    assert ctx.state.local_path("x/y.json") == ctx.workspace.root / "x" / "y.json"
    assert pickle.loads(pickle.dumps(ctx)).state.uri == ctx.state.uri
