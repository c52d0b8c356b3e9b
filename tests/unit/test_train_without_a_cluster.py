"""Local-mode training starts no Ray cluster when none is running and none is to be joined: the one
node it would start is this machine, and local mode trains in this process (``mlops-ray train`` on a
laptop: ~5 s instead of ~13 s). The fast tier refuses ``ray.init`` (conftest), so a start fails here."""

from __future__ import annotations

import pytest

from mlops_ray import ray_runtime


def _no_ray_here(monkeypatch) -> None:
    """This process as a command line sees it: no Ray initialised, no address (a full run reaches the fast
    tier with the session's cluster up in this process)."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)


def test_fresh_local_node_is_this_machine_unless_an_address_is_set_or_gpus_may_be_there(monkeypatch):
    _no_ray_here(monkeypatch)
    monkeypatch.setattr(ray_runtime, "nvidia_device_present", lambda: False)
    node = ray_runtime.fresh_local_node()
    assert node is not None and node[0] >= 1 and node[1] == 0.0
    monkeypatch.setattr(ray_runtime, "nvidia_device_present", lambda: True)
    assert ray_runtime.fresh_local_node() is None  # Ray's GPU detection decides
    monkeypatch.setattr(ray_runtime, "nvidia_device_present", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert ray_runtime.fresh_local_node() is None  # a cluster to join: its nodes decide


def test_local_training_registers_a_version_without_starting_ray(small_config, workspace, monkeypatch):
    from mlops_ray.config import TrainingSpec, config_from_dict
    from mlops_ray.context import Context
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.train.run import train_model

    _no_ray_here(monkeypatch)
    if ray_runtime.fresh_local_node() is None:
        pytest.skip("an NVIDIA device here: Ray's GPU detection decides, so a cluster starts")

    def start(*args, **kwargs):  # the conftest guard refuses ray.init too, when no session cluster runs
        raise AssertionError("local-mode training started Ray")

    monkeypatch.setattr(ray_runtime, "ensure_ray", start)
    base = small_config(rows=800, shards=1)
    cfg = config_from_dict(
        {
            "data": base.data.model_dump(mode="json"),
            "model": {"num_boost_round": 5, "early_stopping_rounds": None},
            "registry": {"model_name": "no-cluster"},
        }
    )
    ctx = Context.create(cfg, workspace=workspace.root)
    snap = prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    cand = train_model(ctx, TrainingSpec.from_config(cfg), snap)
    assert cand.plan.mode == "local" and cand.plan.num_workers == 0
    assert cand.version == "1" and 0.0 <= cand.metrics["test_auc"] <= 1.0
