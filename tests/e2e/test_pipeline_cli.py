"""The smoke pipeline CI runs on every push (scripts/smoke_pipeline.sh), run here as well, so the
README's test command (.ci/run) runs it too: real processes, real local Ray."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_smoke_pipeline_script(tmp_path):
    env = dict(
        os.environ,
        MLOPS_RAY_HOME=str(tmp_path / "home"),
        MLOPS_RAY_BIN=str(Path(sys.executable).parent / "mlops-ray"),
        RAY_AUTH_MODE="disabled",
        MLOPS_RAY_PROGRESS="0",
    )
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(
        [str(ROOT / "scripts" / "smoke_pipeline.sh")], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    out = r.stdout
    assert "smoke pipeline ok" in out and "6 step(s) cached" in out
    assert "version 1 PROMOTE" in out  # the first run's summary line
    history = out.split("smoke pipeline, identical rerun")[-1]
    assert "manual" in history and "succeeded" in history
    # a bad option is a clean exit 2
    bad = subprocess.run(
        [
            env["MLOPS_RAY_BIN"],
            "pipeline",
            "run",
            "--config",
            str(ROOT / "examples" / "smoke.yaml"),
            "--trigger",
            "nonsense",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "nonsense" in bad.stderr
