"""`ray start --head` + `ray job submit --working-dir . -- python jobs/train.py` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _cluster import head_ports, start_head, stop_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def head_node(tmp_path):
    # as with an activated venv: `python` in the job entrypoint is this interpreter
    env = dict(
        os.environ,
        RAY_AUTH_MODE="disabled",
        MLOPS_RAY_HOME=str(tmp_path / "home"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.pop("RAY_ADDRESS", None)
    ports = head_ports()  # never fixed ones: another cluster on this host may hold them
    start_head(env, ports, "--include-dashboard=true")
    env["RAY_ADDRESS"] = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        yield env
    finally:
        stop_cluster(ports["port"])


def test_train_job_submitted_to_a_running_cluster(head_node, tmp_path):
    env = head_node
    home = env["MLOPS_RAY_HOME"]
    # data first (a job too), then training, then the registry sees the version
    runtime_env = json.dumps(
        {"env_vars": {"MLOPS_RAY_HOME": home, "RAY_AUTH_MODE": "disabled", "MLOPS_RAY_PROGRESS": "0"}}
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_ray.cli",
            "data",
            "generate",
            "--rows",
            "4000",
            "--out",
            f"{home}/raw/quickstart",
            "--shards",
            "2",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    for job in (
        ["jobs/prepare.py", "--config", "examples/quickstart.yaml"],
        ["jobs/train.py", "--config", "examples/quickstart.yaml"],
    ):
        r = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--working-dir",
                ".",
                "--runtime-env-json",
                runtime_env,
                "--",
                "python",
                *job,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
        assert "succeeded" in (r.stdout + r.stderr).lower()
    assert "registered version 1 (alias 'challenger')" in r.stdout
    models = subprocess.run(
        [sys.executable, "-m", "mlops_ray.cli", "models", "--config", "examples/quickstart.yaml", "--json"],
        cwd=ROOT,
        env=dict(env, RAY_ADDRESS=""),
        capture_output=True,
        text=True,
    )
    versions = json.loads(models.stdout)["versions"]
    assert [v["version"] for v in versions] == ["1"] and versions[0]["aliases"] == ["challenger"]
