"""The continuous-training pipeline on the real stack: caching, lineage, resume, the run lock,
new data, and history (real local Ray, real MLflow on SQLite)."""

from __future__ import annotations

import threading

import pytest

from mlops_ray.config import config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.generate import generate_dataset
from mlops_ray.errors import PipelineBusyError
from mlops_ray.pipeline import history as hist
from mlops_ray.pipeline.run import STEPS, pipeline_prefix, run_pipeline
from mlops_ray.registry import promotion, tracking

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"num_boost_round": 15, "params": {"max_depth": 3}}


@pytest.fixture
def setup(ray_session, small_config, tmp_path):
    base = small_config(rows=2500)
    src = tmp_path / "source"
    generate_dataset(src / "batch-0", 2500, shards=2, seed=0)
    data = {**base.data.model_dump(mode="json"), "source": str(src)}
    cfg = config_from_dict({"data": data, "registry": {"model_name": "pipe-model"}, "model": FAST})
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    return ctx, cfg, src


def statuses(res):
    return {s.name: s.status for s in res.steps}


def test_first_run_then_fully_cached_rerun_with_lineage(setup):
    ctx, cfg, _ = setup
    first = run_pipeline(ctx, cfg, trigger="manual", reason="first")
    assert first.status == "succeeded", first.error
    assert statuses(first) == dict.fromkeys(STEPS, "succeeded")
    assert first.version == "1" and first.decision == "PROMOTE"
    assert str(tracking.alias_version(ctx.client, "pipe-model", "champion").version) == "1"
    tags = promotion.get_version(ctx.client, "pipe-model", "1").tags
    for key in (
        "trigger",
        "reason",
        "pipeline_run",
        "snapshot_id",
        "data_fingerprint",
        "code_commit",
        "code_digest",
        "config_digest",
        "gate",
        "model_drift",
    ):
        assert tags.get(f"lineage.{key}"), key
    assert tags["lineage.trigger"] == "manual" and tags["lineage.pipeline_run"] == first.run_id
    assert tags["lineage.gate"].startswith("PROMOTE")
    # one MLflow parent run with one child per step (the training run is a child too)
    children = ctx.client.search_runs(
        [ctx.experiment_id], f"tags.mlflow.parentRunId = '{first.mlflow_run_id}'", max_results=50
    )
    assert {r.data.tags.get("pipeline.step") for r in children} >= set(STEPS)
    second = run_pipeline(ctx, cfg, trigger="manual", reason="again")
    assert second.status == "succeeded"
    assert statuses(second) == dict.fromkeys(STEPS, "cached")
    # all cached: bookkeeping only (the 10% figure on the quickstart's data: benchmarks/closed_loop.py)
    assert second.version == "1" and second.seconds < min(0.5 * first.seconds, 2.0), (second.seconds, first.seconds)
    assert all(s.seconds < 0.5 for s in second.steps), [(s.name, s.seconds) for s in second.steps]
    # the cached rerun keeps the lineage of the run that produced the version
    assert promotion.get_version(ctx.client, "pipe-model", "1").tags["lineage.pipeline_run"] == first.run_id
    forced = run_pipeline(ctx, cfg, force=True)
    assert statuses(forced)["train"] == "succeeded" and forced.version == "2"
    runs = hist.read(ctx.state, pipeline_prefix(cfg), "run")
    assert [r["run_id"] for r in runs] == [first.run_id, second.run_id, forced.run_id]


def test_a_failed_step_keeps_earlier_results_and_the_next_run_resumes(setup, monkeypatch):
    ctx, cfg, _ = setup
    calls = {"n": 0}
    real_gate = promotion.gate

    def flaky_gate(*a, **k):  # the registry fails once, during the gate
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("registry unavailable")
        return real_gate(*a, **k)

    monkeypatch.setattr(promotion, "gate", flaky_gate)
    failed = run_pipeline(ctx, cfg)
    assert failed.status == "failed" and "gate" in failed.error and "registry unavailable" in failed.error
    st = statuses(failed)
    assert st["register"] == "succeeded" and st["gate"] == "failed" and st["deploy"] == "not run"
    assert tracking.alias_version(ctx.client, "pipe-model", "champion") is None
    resumed = run_pipeline(ctx, cfg)
    st = statuses(resumed)
    assert [st[s] for s in ("prepare", "train", "evaluate", "register")] == ["cached"] * 4
    # the gate failed last time with the same inputs: it resumes there
    assert st["gate"] == "resumed" and st["deploy"] == "succeeded" and resumed.version == failed.version
    assert str(tracking.alias_version(ctx.client, "pipe-model", "champion").version) == resumed.version


def test_one_run_per_model_at_a_time(setup):
    ctx, cfg, _ = setup
    held, release = threading.Event(), threading.Event()

    def hold():
        with ctx.state.lock(f"{pipeline_prefix(cfg)}/run.lock", holder="pid 1 (test)"):
            held.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    try:
        with pytest.raises(PipelineBusyError, match=r"in progress \(pid 1 \(test\)\)"):
            run_pipeline(ctx, cfg, trigger="data", reason="new files")
    finally:
        release.set()
        t.join()
    # the refused request is in the history, coalesced into the run in progress
    (entry,) = hist.read(ctx.state, pipeline_prefix(cfg), kind="decision")
    assert entry["action"] == "coalesce" and entry["trigger"] == "data" and "pid 1 (test)" in entry["reason"]


def test_new_data_retrains_without_leaking_old_rows_into_the_new_test_split(setup):
    ctx, cfg, src = setup
    first = run_pipeline(ctx, cfg)
    generate_dataset(src / "batch-1", 1500, shards=1, seed=5, drift=1.0)  # new, drifted data lands
    second = run_pipeline(ctx, cfg, trigger="data", reason="new data")
    st = statuses(second)
    assert st["prepare"] == "succeeded" and st["train"] == "succeeded" and second.version == "2"
    assert second.decision in ("PROMOTE", "KEEP")
    gate = second.step("gate").outputs
    assert gate["champion_version"] == "1" and gate["scores"]["champion"] is not None  # compared, not forced
    old = ctx.snapshots.find(first.step("prepare").outputs["snapshot_id"])
    new = ctx.snapshots.find(second.step("prepare").outputs["snapshot_id"])
    from mlops_ray.data.splits import read_split_table

    def ids(snap, split):
        t = read_split_table(snap.split_files(split), snap.spec.id_column, None)
        return set(t.column(snap.spec.id_column).to_pylist())

    for split in ("train", "valid", "test"):
        assert ids(old, split) <= ids(new, split)  # every old row kept its split
    assert not ids(old, "train") & ids(new, "test")  # the champion never trained on the gate's rows
    ev = second.step("evaluate").outputs
    assert ev["champion_version"] == "1" and ev["model_drift_status"] in ("stable", "changed")
