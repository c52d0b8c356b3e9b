"""The closed loop end to end on a real local Ray: serve the champion; in-distribution traffic
(no trigger); new drifted data lands in the source and drifted traffic arrives; the drift trigger
fires once; the pipeline trains on a snapshot with the new data, gates the candidate against the
champion on the same new test rows (no leak), and the service switches with zero failed requests."""

from __future__ import annotations

import pytest
from _cluster import free_port
from _service import raw_config

from mlops_ray.config import config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.generate import generate_dataset
from mlops_ray.data.splits import read_split_table
from mlops_ray.demo.loop import closed_loop
from mlops_ray.pipeline.run import run_pipeline
from mlops_ray.registry import tracking

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ids(snap, split) -> set:
    t = read_split_table(snap.split_files(split), snap.spec.id_column, None)
    return set(t.column(snap.spec.id_column).to_pylist())


def test_drift_retrains_gates_and_switches_the_service(ray_session, tmp_path):
    from mlops_ray.serve.runner import start_service, stop_service

    src = tmp_path / "source"
    generate_dataset(src / "batch-0", 6000, shards=2, seed=0)
    serve = {
        "port": free_port(),
        "min_replicas": 2,
        "max_replicas": 2,
        "num_cpus_per_replica": 0.25,
        "poll_interval_s": 1.0,
    }
    raw = raw_config("loop", src, "loop-model", 40, serve)
    raw["pipeline"] = {"poll_interval_s": 1.0, "drift": {"consecutive_windows": 2}, "data": {"settle_s": 10}}
    cfg = config_from_dict(raw)
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    first = run_pipeline(ctx, cfg, reason="first champion")
    assert first.status == "succeeded" and first.version == "1"
    start_service(ctx, cfg)
    try:
        res = closed_loop(ctx, cfg, new_rows=6000, in_distribution_rows=2000, seed=11, timeout_s=300)
    finally:
        stop_service()
    t_drift = res.traffic.first_drifted_at
    assert t_drift is not None
    runs = [d for d in res.decisions if d["action"] == "run"]
    # no trigger during in-distribution traffic; the drift trigger fires once, not once per window
    assert all(d["at"] >= t_drift for d in res.decisions), res.decisions
    assert [d["trigger"] for d in runs] == ["drift"], runs
    assert "consecutive windows" in runs[0]["reason"]
    assert len(res.runs) == 1 and res.runs[0]["trigger"] == "drift" and res.runs[0]["status"] == "succeeded"
    steps = {s["name"]: s for s in res.runs[0]["steps"]}
    assert steps["prepare"]["status"] == "succeeded" and steps["train"]["status"] == "succeeded"
    # the new snapshot includes the new data, and every old row kept its split: no leak into the gate
    old = ctx.snapshots.find(first.step("prepare").outputs["snapshot_id"])
    new = ctx.snapshots.find(steps["prepare"]["outputs"]["snapshot_id"])
    assert sum(steps["prepare"]["outputs"]["rows"].values()) == 12000
    for split in ("train", "valid", "test"):
        assert ids(old, split) <= ids(new, split)
    assert not ids(old, "train") & ids(new, "test")
    gate = steps["gate"]["outputs"]
    assert gate["champion_version"] == "1" and gate["scores"]["champion"] is not None and gate["reasons"]
    # traffic never failed, before, during or after the switch
    assert res.traffic.failed == 0, res.traffic.failures
    if gate["decision"] == "PROMOTE":
        v = res.runs[0]["version"]
        assert res.champion_after == v and res.traffic.versions.get(v, 0) > 0
        assert res.lead_time_s is not None and res.lead_time_s > 0
        assert str(tracking.alias_version(ctx.client, "loop-model", "champion").version) == v
        tags = ctx.client.get_model_version("loop-model", v).tags
        assert tags["lineage.trigger"] == "drift" and tags["lineage.trigger_report"].endswith("context.json")
    else:
        assert res.champion_after == "1" and gate["decision"] == "KEEP"
