"""Stage contracts on the real stack: exact-version promotion, the deploy alias, isolated contexts."""

from __future__ import annotations

import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.errors import ModelVersionNotFoundError, RegistryError, TrackingError
from mlops_ray.pipeline import stages
from mlops_ray.registry import promotion, tracking
from mlops_ray.train.run import train_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = {"num_boost_round": 15, "params": {"max_depth": 3}}


def _cfg(small_config, **sections):
    base = small_config(rows=2500)
    raw = {"data": base.data.model_dump(mode="json"), "registry": {"model_name": "seam-model"}, "model": FAST}
    raw.update(sections)
    return config_from_dict(raw)


def test_promote_gates_exactly_the_given_version_and_moves_only_the_deploy_alias(ray_session, small_config, tmp_path):
    cfg = _cfg(small_config, serve={"model_alias": "production"})
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    v1 = train_model(ctx, TrainingSpec.from_config(cfg), snap)
    v2 = train_model(
        ctx, TrainingSpec.from_config(cfg), snap, param_overrides={"max_depth": 1, "num_boost_round": 2, "eta": 0.01}
    )  # weak
    client = ctx.client
    # 'challenger' now marks v2, but a pipeline that produced v1 must gate and deploy v1
    assert str(tracking.alias_version(client, "seam-model", "challenger").version) == v2.version
    res = promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, v1.version)
    assert res.challenger_version == v1.version and res.decision.promote and res.alias == "production"
    assert str(tracking.alias_version(client, "seam-model", "production").version) == v1.version
    assert tracking.alias_version(client, "seam-model", "champion") is None  # the hard-coded alias is gone
    # the next gate compares against 'production', and rollback moves 'production'
    res2 = promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, v2.version, force=True)
    assert res2.champion_version == v1.version and res2.scores["champion"] is not None
    assert str(tracking.alias_version(client, "seam-model", "production").version) == v2.version
    event = promotion.rollback(ctx, cfg.registry.model_name, cfg.serve.model_alias)
    assert (event["alias"], event["from_version"], event["to_version"]) == ("production", v2.version, v1.version)
    listing = {r["version"]: r for r in promotion.list_models(ctx, cfg.registry.model_name)}
    assert "production" in listing[v1.version]["aliases"] and listing[v2.version]["gate"] == "PROMOTE (forced)"
    with pytest.raises(RegistryError, match="exact version"):
        promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, None)
    with pytest.raises(ModelVersionNotFoundError, match="no version 99"):
        promotion.promote(ctx, cfg.registry, cfg.serve.model_alias, "99")


def test_two_contexts_with_different_workspaces_in_one_process(ray_session, small_config, tmp_path):
    import mlflow

    before = mlflow.get_tracking_uri()
    cfg = _cfg(small_config)
    a = Context.create(cfg, workspace=tmp_path / "a")
    b = Context.create(cfg, workspace=tmp_path / "b")
    assert a.tracking_uri != b.tracking_uri
    snap_a = stages.prepare(a, cfg, engine="local").snapshot
    cand_a = train_model(a, TrainingSpec.from_config(cfg), snap_a)
    assert b.snapshots.list() == [] and tracking.list_versions(b.client, "seam-model") == []
    snap_b = stages.prepare(b, cfg, engine="local").snapshot
    cand_b = train_model(b, TrainingSpec.from_config(cfg), snap_b)
    # each store has its own version 1 and its own run
    assert cand_a.version == cand_b.version == "1" and cand_a.run_id != cand_b.run_id
    assert b.client.get_run(cand_b.run_id) and len(tracking.list_versions(a.client, "seam-model")) == 1
    with pytest.raises(Exception):
        b.client.get_run(cand_a.run_id)
    assert (tmp_path / "a" / "mlflow.db").is_file() and (tmp_path / "b" / "mlflow.db").is_file()
    # nothing leaked into MLflow's process-wide state
    assert mlflow.get_tracking_uri() == before and mlflow.active_run() is None
    # a context survives pickling (a Ray task gets it from its arguments)
    import pickle

    c = pickle.loads(pickle.dumps(a))
    assert c.tracking_uri == a.tracking_uri and c.workspace == a.workspace and len(c.snapshots.list()) == 1


def test_tune_ranks_trials_by_tune_metric(ray_session, small_config, tmp_path):
    from mlops_ray.config import TrainingSpec
    from mlops_ray.train.tune import tune_model

    cfg = _cfg(
        small_config,
        tune={
            "enabled": True,
            "num_samples": 3,
            "max_concurrent_trials": 2,
            "scheduler": "none",
            "metric": "accuracy",
            "search_space": {"max_depth": {"randint": [1, 5]}},
        },
    )
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    res = tune_model(ctx, TrainingSpec.from_config(cfg), stages.prepare(ctx, cfg, engine="local").snapshot)
    assert res.extra["metric"] == "valid-accuracy"
    children = ctx.client.search_runs([ctx.experiment_id], f"tags.mlflow.parentRunId = '{res.run_id}'")
    finals = {c.info.run_id: c.data.metrics["valid-accuracy"] for c in children}
    best = [c for c in children if c.data.tags["best"] == "True"]
    assert len(best) == 1 and finals[best[0].info.run_id] == max(finals.values())
    assert ctx.client.get_run(res.run_id).data.tags["tune.metric"] == "valid-accuracy"


def test_registry_errors_are_typed(tmp_path):
    ctx = Context.create(None, workspace=tmp_path / "ws")
    with pytest.raises(ModelVersionNotFoundError):
        promotion.get_version(ctx.client, "nope", "1")

    class Broken:
        def get_model_version(self, *a):
            raise RuntimeError("database is locked")

    with pytest.raises(TrackingError, match="database is locked"):
        promotion.get_version(Broken(), "m", "1")
