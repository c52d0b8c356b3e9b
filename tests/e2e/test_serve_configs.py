"""serve_configs/*.yaml work with Ray's own CLI: `serve run` and `serve deploy` against `ray start --head`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from _cluster import stop_cluster
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
URL = "http://127.0.0.1:8000"


def _healthy(timeout=120) -> dict:
    from mlops_ray.serve.runner import wait_healthy

    return wait_healthy(URL, timeout)


@pytest.fixture
def trained_home(ray_session, workspace):
    """A workspace holding a champion of the quickstart model (small, not tuned)."""
    from mlops_ray.config import config_from_dict, load_config
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.pipeline.quickstart import ensure_sample_data
    from mlops_ray.registry.promotion import promote
    from mlops_ray.train.run import train_model

    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["data"]["generate"]["rows"] = 3000
    raw["model"]["num_boost_round"] = 20
    cfg = config_from_dict(raw, base_dir=ROOT / "examples")
    ensure_sample_data(cfg, echo=lambda *_: None)
    train_model(cfg, snapshot_ref=prepare_snapshot(cfg, engine="local").snapshot.id)
    promote(cfg)
    assert load_config(ROOT / "examples" / "quickstart.yaml").registry.model_name == cfg.registry.model_name
    return workspace.root


@pytest.fixture
def head(trained_home):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", MLOPS_RAY_HOME=str(trained_home),
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1",
               RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S="1")
    env.pop("RAY_ADDRESS", None)
    subprocess.run([str(BIN / "ray"), "start", "--head", "--port=6392", "--num-cpus=2", "--dashboard-port=8272",
                    "--dashboard-host=127.0.0.1", "--disable-usage-stats"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)
    env["RAY_DASHBOARD_ADDRESS"] = "http://127.0.0.1:8272"  # serve deploy/shutdown/status
    env["RAY_ADDRESS"] = "127.0.0.1:6392"
    try:
        yield env
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "-y"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        stop_cluster(6392)


def test_serve_deploy_then_serve_run(head):
    env = head
    r = subprocess.run([str(BIN / "serve"), "deploy", "serve_configs/quickstart.yaml"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _healthy()["model_version"] == "1"
    info = httpx.get(f"{URL}/model").json()
    assert info["name"] == "quickstart-churn" and info["alias"] == "champion"
    r = subprocess.run([str(BIN / "serve"), "shutdown", "-y"], cwd=ROOT, env=env, capture_output=True, timeout=120)
    assert r.returncode == 0
    # serve run (foreground) against the same cluster; SIGTERM stops it and cleans up
    proc = subprocess.Popen([str(BIN / "serve"), "run", "serve_configs/quickstart.yaml"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _healthy()["status"] == "ok"
        body = httpx.post(f"{URL}/predict", json={"records": [dict.fromkeys(info["feature_schema"])]}).json()
        assert body["model"]["version"] == "1" and len(body["predictions"]) == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def test_mlops_ray_serve_runs_in_foreground_until_sigterm(trained_home):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", MLOPS_RAY_HOME=str(trained_home), MLOPS_RAY_PROGRESS="0")
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "mlops_ray.cli", "serve", "--config", "examples/quickstart.yaml"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _healthy(180)["model_version"] == "1"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    assert "serving quickstart-churn@champion at http://127.0.0.1:8000" in out and "shutting down" in out
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{URL}/health", timeout=2)
