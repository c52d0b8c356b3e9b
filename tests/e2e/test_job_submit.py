"""`ray start --head` + `ray job submit --working-dir . -- python jobs/pipeline.py` as a user runs it."""

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


def test_pipeline_job_submitted_to_a_running_cluster(head_node, tmp_path):
    """``ray job submit --working-dir .`` (the CLI, the working directory uploaded as a package) runs the
    pipeline job; then the same through Ray's job API, followed by status and logs. The other job
    entrypoints are the same one-line wrappers of the CLI (tests/unit/test_jobs_entrypoints.py)."""
    import time

    from ray.job_submission import JobStatus, JobSubmissionClient

    env = head_node
    home = env["MLOPS_RAY_HOME"]
    env_vars = {"MLOPS_RAY_HOME": home, "RAY_AUTH_MODE": "disabled", "MLOPS_RAY_PROGRESS": "0"}
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
    r = subprocess.run(
        [
            str(BIN / "ray"),
            "job",
            "submit",
            "--working-dir",
            ".",
            "--runtime-env-json",
            json.dumps({"env_vars": env_vars}),
            "--",
            "python",
            "jobs/pipeline.py",
            "--config",
            "examples/quickstart.yaml",
            "--trigger",
            "manual",
            "--reason",
            "job test",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "succeeded" in out.lower() and "pipeline run (manual)" in out and "version 1 PROMOTE" in out, out[-3000:]
    models = subprocess.run(
        [sys.executable, "-m", "mlops_ray.cli", "models", "--config", "examples/quickstart.yaml", "--json"],
        cwd=ROOT,
        env=dict(env, RAY_ADDRESS=""),
        capture_output=True,
        text=True,
    )
    versions = json.loads(models.stdout)["versions"]
    assert [v["version"] for v in versions] == ["1"] and "champion" in versions[0]["aliases"]
    # the job API: a code-triggered run of the same pipeline, nothing new to train, every step cached
    client = JobSubmissionClient(env["RAY_ADDRESS"])
    job_id = client.submit_job(
        entrypoint="python jobs/pipeline.py --config examples/quickstart.yaml --trigger code --reason 'job test'",
        runtime_env={"working_dir": str(ROOT), "env_vars": env_vars},
    )
    deadline, status = time.monotonic() + 600, None
    seen = set()
    while time.monotonic() < deadline:
        status = client.get_job_status(job_id)
        seen.add(status)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert JobStatus.RUNNING in seen or JobStatus.PENDING in seen
    assert "pipeline run (code)" in logs and "succeeded in" in logs, logs[-3000:]
    history = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops_ray.cli",
            "pipeline",
            "history",
            "--config",
            "examples/quickstart.yaml",
            "--json",
        ],
        cwd=ROOT,
        env=dict(env, RAY_ADDRESS=""),
        capture_output=True,
        text=True,
    )
    runs = [e for e in json.loads(history.stdout) if e["kind"] == "run"]
    assert [(r["trigger"], r["status"]) for r in runs] == [("manual", "succeeded"), ("code", "succeeded")]
    assert runs[0]["version"] == "1"
