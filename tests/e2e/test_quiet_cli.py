"""The quickstart as a user runs it prints our messages, not library chatter: Ray/Tune/Serve/MLflow logs,
warnings and worker output go to <workspace>/logs/, named once at the end (real process, real Ray)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _cluster import free_port, serve_port_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mlops_ray.cli"]
CHATTER = ("Traceback", "WARNING", "INFO", "FutureWarning", "UserWarning", "(raylet)", "pid=", "TensorBoard")


def test_quickstart_stderr_is_quiet_and_names_the_library_log(tmp_path):
    home = tmp_path / "home"
    env = dict(
        os.environ, MLOPS_RAY_HOME=str(home), RAY_AUTH_MODE="disabled", MLOPS_RAY_PROGRESS="0", **serve_port_env()
    )
    env.pop("RAY_ADDRESS", None)
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw["serve"]["port"] = free_port()
    config = tmp_path / "quickstart.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    r = subprocess.run(
        [*CLI, "quickstart", "--config", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[3/6] serve:" in r.stdout and "service stopped" in r.stdout
    lines = r.stderr.split("\n")
    lines = [ln for ln in lines if ln.strip()]
    assert len(lines) <= 3, r.stderr  # a few of ours at most; ~100 lines of library output before
    for word in CHATTER:
        assert word not in r.stderr, (word, r.stderr)
    assert "tensorboard" not in r.stdout.lower() and "View detailed results here" not in r.stdout
    notes = [ln for ln in lines if ln.startswith("library logs: ")]
    assert len(notes) == 1, r.stderr
    logfile = Path(notes[0].removeprefix("library logs: "))
    assert logfile.parent == home / "logs" and logfile.name.startswith("mlops-ray-quickstart-")
    assert logfile.stat().st_size > 0
