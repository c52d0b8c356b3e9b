"""serve_configs/*.yaml work with Ray's own CLI: `serve run` and `serve deploy` against `ray start --head`."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from _cluster import free_port, head_ports, serve_port_env, start_head, stop_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SERVE_CONFIGS = sorted((ROOT / "serve_configs").glob("*.yaml"))


def _healthy(url, timeout=120) -> dict:
    from mlops_ray.serve.runner import wait_healthy

    return wait_healthy(url, timeout)


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=lambda p: p.name)
def test_shipped_serve_config_matches_its_pipeline_config(path):
    """A shipped Serve config deploys what `mlops-ray serve --config <its args.config>` deploys."""
    from mlops_ray.config import load_config
    from mlops_ray.serve.runner import APP_NAME

    shipped = yaml.safe_load(path.read_text())
    (app,) = shipped["applications"]
    module, _, attr = app["import_path"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
    assert (app["name"], app["route_prefix"]) == (APP_NAME, "/")
    s = load_config(ROOT / app["args"]["config"]).serve  # resolved from the repo root, as documented
    assert shipped["http_options"] == {"host": s.host, "port": s.port}
    (dep,) = app["deployments"]
    assert dep["ray_actor_options"] == {"num_cpus": s.num_cpus_per_replica}
    assert dep["max_ongoing_requests"] == s.max_ongoing_requests
    scaling = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s")
    assert {k: dep["autoscaling_config"][k] for k in scaling} == {k: getattr(s, k) for k in scaling}
    assert dep["user_config"] == {
        "poll_interval_s": s.poll_interval_s,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
    }


@pytest.fixture
def serve_config(tmp_path):
    """serve_configs/quickstart.yaml as shipped but on a free HTTP port: (path, base URL)."""
    raw = yaml.safe_load((ROOT / "serve_configs" / "quickstart.yaml").read_text())
    raw["http_options"]["port"] = free_port()
    path = tmp_path / "serve-quickstart.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path, f"http://{raw['http_options']['host']}:{raw['http_options']['port']}"


@pytest.fixture
def trained_home(ray_session, workspace):
    """A workspace holding a champion of the quickstart model (small, not tuned)."""
    from mlops_ray.config import TrainingSpec, config_from_dict
    from mlops_ray.context import Context
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.pipeline.stages import ensure_sample_data
    from mlops_ray.registry.promotion import promote
    from mlops_ray.train.run import train_model

    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["data"]["generate"]["rows"] = 3000
    raw["model"]["num_boost_round"] = 20
    cfg = config_from_dict(raw, base_dir=ROOT / "examples")
    ctx = Context.create(cfg, workspace=workspace)
    ensure_sample_data(ctx, cfg)
    cand = train_model(
        ctx, TrainingSpec.from_config(cfg), prepare_snapshot(cfg.data, ctx.workspace, engine="local").snapshot
    )
    promote(ctx, cfg.registry, cfg.serve.model_alias, cand.version)
    return workspace.root


@pytest.fixture
def head(trained_home):
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        MLOPS_RAY_HOME=str(trained_home),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1",
        RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1",
        **serve_port_env(),
    )
    env.pop("RAY_ADDRESS", None)
    ports = head_ports()  # never fixed ones: another cluster on this host may hold them
    start_head(env, ports, cwd=ROOT)
    env["RAY_DASHBOARD_ADDRESS"] = f"http://127.0.0.1:{ports['dashboard-port']}"  # serve deploy/shutdown/status
    env["RAY_ADDRESS"] = f"127.0.0.1:{ports['port']}"
    try:
        yield env
    finally:  # the whole cluster goes, Serve's controller, proxies and HAProxy with it (no `serve shutdown`)
        stop_cluster(ports["port"])


def test_serve_deploy_then_serve_run(head, serve_config):
    env = head
    config, url = serve_config
    r = subprocess.run(
        [str(BIN / "serve"), "deploy", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert _healthy(url)["model_version"] == "1"
    info = httpx.get(f"{url}/model").json()
    assert info["name"] == "quickstart-churn" and info["alias"] == "champion"
    r = subprocess.run([str(BIN / "serve"), "shutdown", "-y"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0
    # serve run (foreground) against the same cluster; SIGTERM stops it and cleans up
    proc = subprocess.Popen(
        [str(BIN / "serve"), "run", str(config)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert _healthy(url)["status"] == "ok"
        body = httpx.post(f"{url}/predict", json={"records": [dict.fromkeys(info["feature_schema"])]}).json()
        assert body["model"]["version"] == "1" and len(body["predictions"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
