"""Helpers shared by the CLI tests of the unit and integration tiers: a config file, the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def write_config(tmp_path: Path, small_config, name: str = "cfg.yaml", **sections) -> Path:
    """A pipeline config file over ``small_config()``'s generated data, plus ``sections``."""
    raw = {"data": small_config().data.model_dump(mode="json"), **sections}
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def run_cli(args, home: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m mlops_ray.cli [extra] args`` with ``MLOPS_RAY_HOME=home`` and no inherited cluster or MLflow URIs."""
    env = dict(os.environ, MLOPS_RAY_HOME=str(home))
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "mlops_ray.cli", *extra, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
