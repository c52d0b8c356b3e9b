"""The drift monitor's pure core: windows (by rows, by time on a fake clock), versions that never
mix, MAX_VERSIONS, the report, and the checkpoint through the state store (no Ray)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _drift_data import LIMITS, make_stats, sample

from mlops_ray.config import DriftConfig
from mlops_ray.drift.checkpoint import CheckpointStore, checkpoint_key
from mlops_ray.drift.core import MAX_VERSIONS, MonitorCore
from mlops_ray.drift.reference import DriftReference, evaluate
from mlops_ray.drift.render import json_safe
from mlops_ray.drift.windows import WindowStore
from mlops_ray.state import LocalStateStore


# ----------------------------------------------------------------------------------- windows
def store(**kw):
    params = {"window_rows": 1000, "window_s": 60.0, "keep_windows": 3, "limits": LIMITS, **kw}
    return WindowStore("m", **params), params


def test_windows_close_by_rows_and_time_and_keep_last():
    rng = np.random.default_rng(3)
    s, _ = store()
    stats = make_stats()
    ref = DriftReference.from_stats(stats)
    assert s.register("1", stats, 0.0) and not s.register("1", stats, 0.0)
    closed = []
    for i in range(10):  # 10 pushes of 256 rows at t = i
        closed += s.add("1", ref.count(sample(rng, 256)), 256, float(i))
    assert [c["window"]["rows"] for c in closed] == [1024, 1024]
    assert s.versions["1"].current.rows == 512
    assert s.tick(30.0) == []  # window started at t=8: 22 s old
    late = s.tick(68.0)
    assert len(late) == 1 and late[0]["window"]["rows"] == 512 and late[0]["window"]["closed"]
    assert s.tick(1000.0) == []  # an empty window never closes
    for i in range(8):
        s.add("1", ref.count(sample(rng, 1000)), 1000, 2000.0 + i)
    assert len(s.report("1")["windows"]) == 3  # keep_windows
    assert s.add("9", ref.count(sample(rng, 10)), 10, 0.0) == [] and s.dropped_rows == 10


def test_versions_never_mix_and_state_round_trips():
    rng = np.random.default_rng(4)
    s, params = store()
    stats = make_stats()
    ref = DriftReference.from_stats(stats)
    s.register("1", stats, 0.0)
    s.register("2", stats, 0.0)
    s.add("1", ref.count(sample(rng, 700)), 700, 1.0)
    s.add("2", ref.count(sample(rng, 1200, shift=10)), 1200, 1.0)
    s.add("2", ref.count(sample(rng, 300, shift=10)), 300, 2.0)
    assert s.report("1")["current"]["rows"] == 700 and s.report("1")["current"]["status"] == "ok"
    assert s.report("2")["windows"][0]["status"] == "alert"
    import json

    restored = WindowStore.from_dict(json.loads(json.dumps(s.to_dict())), **params)
    for v in ("1", "2"):
        assert json_safe(restored.report(v)) == json_safe(s.report(v))


# ----------------------------------------------------------------------------------- the core
def config(**kw) -> DriftConfig:
    return DriftConfig(window_rows=1000, window_s=60.0, keep_windows=3, min_rows=500, **kw)


def core_with(*versions, checkpoint=None) -> tuple[MonitorCore, DriftReference]:
    c = MonitorCore("m", config(), checkpoint=checkpoint, now=100.0)
    stats = make_stats()
    for i, v in enumerate(versions):
        c.register(v, stats, float(i))
    return c, DriftReference.from_stats(stats)


def test_core_window_equals_one_evaluation_of_all_its_rows():
    """Pushes in any chunking close a window whose PSI is that of its rows counted at once."""
    rng = np.random.default_rng(7)
    c, ref = core_with("1")
    parts = [sample(rng, n, shift=3) for n in (300, 250, 450)]
    closed = []
    for t, part in enumerate(parts):
        closed += c.push("1", ref.count(part), part.num_rows, now=10.0 + t)
    (ev,) = closed
    whole = {k: sum(ref.count(p)[k] for p in parts) for k in ref.count(parts[0])}
    direct = evaluate(ref, whole, **LIMITS)
    assert ev["window"]["rows"] == 1000 and ev["status"] == direct["status"]
    assert [f["psi"] for f in ev["features"]] == pytest.approx([f["psi"] for f in direct["features"]])


def test_core_closes_a_quiet_window_after_window_s_on_a_fake_clock():
    rng = np.random.default_rng(8)
    c, ref = core_with("1")
    assert c.push("1", ref.count(sample(rng, 600)), 600, now=1000.0) == []
    assert c.tick(1059.0) == []  # 59 s after its first row
    (ev,) = c.tick(1060.0)
    assert ev["window"]["rows"] == 600 and ev["window"]["start"] == 1000.0 and ev["window"]["end"] == 1060.0
    assert c.tick(5000.0) == []  # the next window is empty: it never closes


def test_core_versions_never_mix():
    rng = np.random.default_rng(9)
    c, ref = core_with("1", "2")
    c.push("2", ref.count(sample(rng, 1000, shift=10)), 1000, now=1.0)
    c.push("1", ref.count(sample(rng, 1000)), 1000, now=1.0)
    rep = c.report(monitor={}, feedback={})
    assert rep["versions"]["1"]["windows"][0]["status"] == "ok"
    assert rep["versions"]["2"]["windows"][0]["status"] == "alert"
    assert rep["versions"]["1"]["total_rows"] == rep["versions"]["2"]["total_rows"] == 1000
    assert c.push("7", ref.count(sample(rng, 10)), 10, now=2.0) == []  # never registered: dropped
    assert c.report(monitor={}, feedback={})["monitor"]["dropped_rows"] == 10


def test_core_keeps_max_versions_dropping_the_oldest_registered():
    names = [str(v) for v in (9, 3, 7, 1, 5, 2)]  # registered in this order (not sorted)
    c, _ = core_with(*names)
    assert len(names) == MAX_VERSIONS + 1
    assert c.versions() == names[1:]
    assert not c.register("3", make_stats(), 99.0)  # already monitored: idempotent


def test_core_logs_an_alert_when_it_starts_and_ends_not_every_window(caplog):
    rng = np.random.default_rng(10)
    c, ref = core_with("1")
    with caplog.at_level(logging.WARNING, logger="mlops_ray.drift"):
        for shift in (10, 10, 10, 0):
            c.push("1", ref.count(sample(rng, 1000, shift=shift)), 1000, now=1.0)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "drift alert on m v1: x" in lines[0] and "ended" in lines[1]


def test_core_report_is_json_safe_and_carries_the_actor_parts():
    rng = np.random.default_rng(11)
    c, ref = core_with("1", "2")
    c.push("1", ref.count(sample(rng, 100)), 100, now=1.0, skipped=40)
    c.push("1", {}, 0, now=1.0, skipped=2)  # only sampled-out rows
    rep = c.report("1", monitor={"checkpoint": "/c", "metrics": "http://h/metrics"}, feedback={"1": {"n": 1}})
    json.dumps(rep, allow_nan=False)  # non-finite numbers (bin edges, PSI of empty windows) are null
    assert list(rep["versions"]) == ["1"]
    assert rep["versions"]["1"]["sampled_out_rows"] == 42 and rep["versions"]["1"]["feedback"] == {"n": 1}
    assert rep["monitor"]["pushes"] == 2 and rep["monitor"]["checkpoint"] == "/c"
    assert rep["settings"]["window_rows"] == 1000 and rep["settings"]["psi_alert"] == 0.25
    assert c.report("8", monitor={}, feedback={})["versions"] == {}


# ----------------------------------------------------------------------------------- checkpoint
def test_checkpoint_round_trips_through_the_state_store_at_the_workspace_path(tmp_path):
    rng = np.random.default_rng(12)
    c, ref = core_with("1", "2")
    c.push("1", ref.count(sample(rng, 1300)), 1300, now=5.0)
    c.push("2", ref.count(sample(rng, 200, shift=10)), 200, now=6.0)
    store = CheckpointStore(LocalStateStore(tmp_path), "my model/x", interval_s=1.0)
    store.save(c.to_checkpoint(), now=0.0)
    assert store.location == str(tmp_path / "drift" / "my_model_x.json") == str(tmp_path / checkpoint_key("my model/x"))
    on_disk = json.loads((tmp_path / "drift" / "my_model_x.json").read_text())
    assert on_disk == json.loads(json.dumps(c.to_checkpoint()))  # plain json.dumps, edges as Infinity
    assert set(on_disk) == {"model", "dropped_rows", "versions"}
    restored = MonitorCore("m", config(), checkpoint=store.load(), now=200.0)
    assert restored.restored and not c.restored
    for v in ("1", "2"):
        assert json_safe(restored.windows.report(v)) == json_safe(c.windows.report(v))


def test_checkpoint_unreadable_starts_empty(tmp_path, caplog):
    state = LocalStateStore(tmp_path)
    store = CheckpointStore(state, "m", interval_s=1.0)
    assert store.load() is None  # none yet
    state.write_bytes(checkpoint_key("m"), b"{not json")
    with caplog.at_level(logging.WARNING, logger="mlops_ray.drift"):
        assert store.load() is None
    state.write_bytes(checkpoint_key("m"), b'{"model": "m", "versions": {"1": {}}}')  # parses, wrong shape
    with caplog.at_level(logging.WARNING, logger="mlops_ray.drift"):
        core = MonitorCore("m", config(), checkpoint=store.load())
    assert core.versions() == [] and not core.restored
    assert len([r for r in caplog.records if "checkpoint" in r.getMessage()]) == 2


def test_checkpoint_due_every_interval_and_none_without_a_store():
    store = CheckpointStore(None, "m", interval_s=1.0)
    assert store.due(0.0)  # never saved
    store.save({"model": "m"}, now=10.0)
    assert not store.due(10.9) and store.due(11.0)
    assert store.location is None and store.load() is None
