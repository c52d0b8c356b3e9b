"""The README's main command, run as a user would: a real process, real local Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mlops_ray.cli"]


def _cli(*args, env, timeout=300):
    return subprocess.run([*CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_quickstart_then_commands_with_example_config(tmp_path):
    env = dict(os.environ, MLOPS_RAY_HOME=str(tmp_path / "home"), RAY_AUTH_MODE="disabled", MLOPS_RAY_PROGRESS="0")
    env.pop("RAY_ADDRESS", None)
    r = _cli("quickstart", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "fingerprint:" in r.stdout and "train:" in r.stdout
    assert "registered quickstart-churn v1 as challenger" in r.stdout and "PROMOTE" in r.stdout
    assert '"model": {"name": "quickstart-churn", "version": "1"' in r.stdout  # a real HTTP answer
    assert "curl -s -X POST http://127.0.0.1:8000/predict" in r.stdout and "service stopped" in r.stdout
    listing = json.loads(_cli("data", "list", "--json", env=env).stdout)
    assert len(listing) == 1 and listing[0]["name"] == "quickstart"
    # the example config finds the data in the workspace, from the repo root
    again = _cli("data", "prepare", "--config", "examples/quickstart.yaml", env=env)
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout and listing[0]["snapshot_id"] in again.stdout
