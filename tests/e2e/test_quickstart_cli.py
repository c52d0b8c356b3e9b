"""The README's main command, run as a user would: a real process, real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cluster import free_port, serve_port_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mlops_ray.cli"]


def _cli(*args, env, timeout=300):
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_then_commands_with_example_config(tmp_path):
    import yaml

    env = dict(
        os.environ,
        MLOPS_RAY_HOME=str(tmp_path / "home"),
        RAY_AUTH_MODE="disabled",
        MLOPS_RAY_PROGRESS="0",
        **serve_port_env(),
    )
    env.pop("RAY_ADDRESS", None)
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    port = free_port()  # never the fixed default: another service may hold it
    raw["serve"]["port"] = port
    config = tmp_path / "quickstart.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))  # split fractions are ordered
    r = _cli("quickstart", "--config", str(config), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fingerprint:" in r.stdout
    assert "[3/5] tune:" in r.stdout and "ranked by valid" in r.stdout  # the training step itself ran
    assert "registered quickstart-churn v1" in r.stdout
    assert "[4/5] gate: v1 vs the current 'champion'" in r.stdout and "PROMOTE" in r.stdout
    assert "'champion' -> v1 (was none)" in r.stdout
    assert '"model": {"name": "quickstart-churn", "version": "1"' in r.stdout  # a real HTTP answer
    assert f"curl -s -X POST http://127.0.0.1:{port}/predict" in r.stdout and "service stopped" in r.stdout
    assert f"mlops-ray serve --config {config}" in r.stdout  # hints name the config the user passed
    listing = json.loads(_cli("data", "list", "--json", env=env).stdout)
    assert len(listing) == 1 and listing[0]["name"] == "quickstart"
    # the example config finds the data in the workspace, from the repo root
    again = _cli("data", "prepare", "--config", "examples/quickstart.yaml", env=env)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and listing[0]["snapshot_id"] in again.stdout
    # the README's follow-up commands, as written, on this fresh quickstart
    for args in (
        ("train", "--config", str(config)),
        ("promote", "--config", str(config)),
        ("promote", "--config", str(config), "--force"),
        ("models", "--config", str(config), "--history"),
        ("rollback", "--config", str(config)),
    ):
        r = _cli(*args, env=env)
        assert r.returncode == 0, (args, r.stdout + r.stderr)
        assert "Traceback" not in r.stderr
    assert "champion: v2 -> v1" in r.stdout  # rollback restored the quickstart's champion
