"""Reproducible tuning on a real Ray: the same trials and winner at any concurrency; the cap holds."""

from __future__ import annotations

import pytest

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.context import Context
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.train.tune import parse_search_space, sample_configs, tune_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SPACE = {"max_depth": {"randint": [1, 8]}, "eta": {"loguniform": [0.01, 0.5]}}


def _config(small_config, **tune):
    t = {"enabled": True, "num_samples": 6, "max_concurrent_trials": 2, "scheduler": "asha", "search_space": SPACE}
    t.update(tune)
    data = small_config(rows=2500).data.model_dump(mode="json")
    return config_from_dict(
        {"data": data, "registry": {"model_name": "tune-repro"}, "model": {"num_boost_round": 48}, "tune": t}
    )


def _setup(small_config, tmp_path, **tune):
    cfg = _config(small_config, **tune)
    ctx = Context.create(cfg, workspace=tmp_path / "ws")
    return ctx, cfg, prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])  # an end sorts before a start
    live = peak = 0
    for _, step in events:
        live += step
        peak = max(peak, live)
    return peak


def test_asha_keeps_the_same_trials_and_winner_at_any_concurrency(ray_session, small_config, tmp_path):
    ctx, cfg, snap = _setup(small_config, tmp_path)
    two = tune_model(ctx, TrainingSpec.from_config(cfg), snap, register=False)
    one = tune_model(
        ctx, TrainingSpec.from_config(_config(small_config, max_concurrent_trials=1)), snap, register=False
    )
    assert (two.extra["max_concurrent_trials"], one.extra["max_concurrent_trials"]) == (2, 1)
    # the same configurations, sampled from the seed in trial order
    expected = sample_configs(parse_search_space(SPACE), 6, cfg.model.seed)
    for res in (two, one):
        assert [t["config"] for t in res.extra["trial_results"]] == expected
    # ASHA did stop trials, and the same ones; the same winner with the same validation metric
    assert two.extra["stopped_early"], "ASHA stopped no trial: the comparison below would be vacuous"
    assert two.extra["stopped_early"] == one.extra["stopped_early"]
    assert [t["status"] for t in two.extra["trial_results"]] == [t["status"] for t in one.extra["trial_results"]]
    assert two.extra["best_index"] == one.extra["best_index"] and two.extra["best_config"] == one.extra["best_config"]
    metric = two.extra["metric"]
    assert [t[metric] for t in two.extra["trial_results"]] == [t[metric] for t in one.extra["trial_results"]]
    assert two.metrics == one.metrics


def test_max_concurrent_trials_caps_the_trials_that_run_at_once(ray_session, small_config, tmp_path, monkeypatch):
    import mlops_ray.ray_runtime as runtime

    # Each trial gets total CPUs // k: report 1 CPU so that a trial asks for 1 of the session's 2,
    # and resources alone would let 2 trials run at once; only the cap can hold them to 1.
    monkeypatch.setattr(runtime, "alive_node_cpus", lambda: [1.0])
    ctx, cfg, snap = _setup(small_config, tmp_path, max_concurrent_trials=1, scheduler="none", num_samples=4)
    res = tune_model(ctx, TrainingSpec.from_config(cfg), snap, register=False)
    assert (res.extra["max_concurrent_trials"], res.extra["cpus_per_trial"]) == (1, 1)
    spans = [(t["started_at"], t["ended_at"]) for t in res.extra["trial_results"]]
    assert len(spans) == 4 and all(a is not None and b is not None and a < b for a, b in spans), spans
    assert _max_overlap(spans) == 1, spans
