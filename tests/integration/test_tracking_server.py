"""The cluster tracking server for real: PostgreSQL (the machine's own server binaries) as MLflow's backend
store, ``mlflow server --serve-artifacts`` proxying artifacts to a bucket on the tests' moto S3 server,
every client over HTTP; the ``mlops-ray tracking-server`` CLI as a process; and the project's pipeline
with ``mlflow.tracking_uri: http://...`` (the last test uses the session's Ray: run this module under
``flock /tmp/mlops-ray-ray-tests.lock``).

One server for the module (its start, ~10 s, is printed: PostgreSQL's initdb and start, MLflow's start
and schema migrations).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests._tracking import start_tracking_stack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(s3_server):
    t0 = time.perf_counter()
    st = start_tracking_stack(s3_server)
    print(
        f"\n[tracking stack] started in {time.perf_counter() - t0:.1f} s (PostgreSQL "
        f"{st.timings['postgres_s']:.1f} s, MLflow server + migrations {st.timings['mlflow_s']:.1f} s) at {st.url}"
    )
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture
def client(stack):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=stack.url, registry_uri=stack.url)


def _files_named(root: Path, name: str) -> list[Path]:
    return [Path(d) / name for d, _, files in os.walk(root) if name in files]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ------------------------------------------------------------------------------------ the server itself
def test_runs_params_metrics_and_artifacts_go_to_the_server_and_the_bucket(stack, client, tmp_path):
    exp_id = client.create_experiment("tracking-server-basics")
    assert client.get_experiment(exp_id).artifact_location.startswith("mlflow-artifacts:")  # proxied
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "alpha", "0.5")
    for step, v in enumerate([0.3, 0.2, 0.1]):
        client.log_metric(run.info.run_id, "loss", v, step=step)
    name = "artifact-only-in-the-bucket.txt"
    (tmp_path / name).write_text("hello object store\n")
    client.log_artifact(run.info.run_id, str(tmp_path / name), artifact_path="notes")
    client.set_terminated(run.info.run_id)

    got = client.get_run(run.info.run_id)
    assert got.data.params == {"alpha": "0.5"} and got.data.metrics["loss"] == 0.1
    assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.3, 0.2, 0.1]
    key = f"{stack.prefix}/{exp_id}/{run.info.run_id}/artifacts/notes/{name}"
    assert key in stack.objects()
    body = stack.s3.client().get_object(Bucket=stack.bucket, Key=key)["Body"].read()
    assert body == b"hello object store\n"
    assert _files_named(stack.root, name) == []  # nothing under the server's data dir
    back = client.download_artifacts(run.info.run_id, f"notes/{name}", str(tmp_path / "back"))
    assert Path(back).read_text() == "hello object store\n"


def test_registered_model_version_and_alias(stack, client):
    exp_id = client.create_experiment("tracking-server-registry")
    run = client.create_run(exp_id)
    client.create_registered_model("ts-registry-model")
    v1 = client.create_model_version("ts-registry-model", f"{run.info.artifact_uri}/m", run_id=run.info.run_id)
    v2 = client.create_model_version("ts-registry-model", f"{run.info.artifact_uri}/m2", run_id=run.info.run_id)
    client.set_registered_model_alias("ts-registry-model", "champion", v1.version)
    assert client.get_model_version_by_alias("ts-registry-model", "champion").version == v1.version
    client.set_registered_model_alias("ts-registry-model", "champion", v2.version)
    assert client.get_model_version_by_alias("ts-registry-model", "champion").version == v2.version == "2"
    client.set_terminated(run.info.run_id)


def test_a_sklearn_model_logs_and_loads_back_by_alias(stack, client):
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    exp_id = client.create_experiment("tracking-server-sklearn")
    mlflow.set_tracking_uri(stack.url)  # the fluent API (conftest resets it after the test)
    mlflow.set_registry_uri(stack.url)
    with mlflow.start_run(experiment_id=exp_id) as run:
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name="ts-sklearn", input_example=X[:2])
    version = info.registered_model_version
    client.set_registered_model_alias("ts-sklearn", "prod", version)
    loaded = mlflow.pyfunc.load_model("models:/ts-sklearn@prod")
    assert np.array_equal(loaded.predict(X), model.predict(X))
    keys = stack.objects()
    assert any(k.startswith(f"{stack.prefix}/{exp_id}/") and k.endswith("/MLmodel") for k in keys), keys
    assert _files_named(stack.root, "MLmodel") == []
    assert run.info.run_id


def test_the_data_is_in_postgresql(stack, client):
    import psycopg

    exp_id = client.create_experiment("tracking-server-sql")
    run = client.create_run(exp_id, run_name="in-postgres")
    client.set_terminated(run.info.run_id)
    with psycopg.connect(**stack.pg.connect_kwargs()) as conn:
        assert conn.execute("select version()").fetchone()[0].startswith("PostgreSQL")
        (n_runs,) = conn.execute("select count(*) from runs").fetchone()
        (name,) = conn.execute("select name from runs where run_uuid = %s", (run.info.run_id,)).fetchone()
        (location,) = conn.execute(
            "select artifact_location from experiments where name = %s", ("tracking-server-sql",)
        ).fetchone()
    assert n_runs >= 1 and name == "in-postgres" and location.startswith("mlflow-artifacts:")


# ------------------------------------------------------------------------------------ the CLI
def _cli(*args: str, **kw) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    return subprocess.Popen(
        [sys.executable, "-m", "mlops_ray.cli", "tracking-server", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        **kw,
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (the CLI stops what it started), SIGKILL to its group if it is still there after 60 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _read_until(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """The process's stdout up to the line with ``needle`` (raw reads of the pipe: select() cannot see what a
    buffered reader already holds)."""
    fd, out, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while needle.encode() not in out:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            _stop(proc)
            rest, err = proc.communicate()
            pytest.fail(f"no {needle!r} in {timeout:.0f} s (exit {proc.returncode}):\n{out.decode()}{rest}\n{err}")
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if ready:
            out += os.read(fd, 65536)
    return out.decode()


def test_cli_start_prints_the_uri_answers_and_sigterm_stops_both():
    import json

    base = Path(tempfile.mkdtemp(prefix="mlops-ray-ts-cli-"))
    os.chmod(base, 0o711)  # PostgreSQL runs as 'postgres' when the tests run as root
    data_dir = base / "server"
    t0 = time.perf_counter()
    proc = _cli("start", "--data-dir", str(data_dir))
    try:
        out = _read_until(proc, "stops both", timeout=120)
        started = time.perf_counter() - t0
        print(f"\n[tracking-server start] ready in {started:.1f} s (process start to the URI printed)")
        url = out.split("tracking server: ", 1)[1].split()[0]
        assert f"mlflow.tracking_uri: {url}" in out and url.startswith("http://127.0.0.1:")
        assert f"record:        {data_dir / 'server.json'}" in out
        with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
            assert r.status == 200
        record = json.loads((data_dir / "server.json").read_text())
        assert record["url"] == url and record["process"]["pid"] == proc.pid
        pids = [record["mlflow"]["pid"], record["postgres"]["pid"]]
        children = [p.pid for p in psutil.Process(record["mlflow"]["pid"]).children(recursive=True)]
        assert all(not _gone(p) for p in pids)
        # a second start on the same data dir is refused while this one runs
        second = _cli("start", "--data-dir", str(data_dir))
        _, err = second.communicate(timeout=60)
        assert second.returncode == 2 and err.startswith("error: ") and "already runs" in err, err
        assert "Traceback" not in err

        t1 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
        print(f"[tracking-server start] stopped {time.perf_counter() - t1:.1f} s after SIGTERM")
        assert proc.returncode == 0, err
        assert "stopping (SIGTERM)" in rest and "tracking server stopped" in rest
        assert "Traceback" not in err
        deadline = time.monotonic() + 10
        while not all(_gone(p) for p in [*pids, *children]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [p for p in [*pids, *children] if not _gone(p)] == []
        assert not (data_dir / "server.json").exists()
        assert (data_dir / "postgres" / "PG_VERSION").exists()  # the data stays for the next start
    finally:
        _stop(proc)
        if (data_dir / "server.json").exists():  # the test failed half-way: stop what it left
            subprocess.run(
                [sys.executable, "-m", "mlops_ray.cli", "tracking-server", "stop", "--data-dir", str(data_dir)]
            )
        shutil.rmtree(base, ignore_errors=True)


def test_cli_start_with_a_bad_data_dir_exits_2_with_a_message(tmp_path):
    # the other bad inputs of both commands: tests/unit/test_cli_every_command.py (in process)
    (tmp_path / "a-file").write_text("x")
    proc = _cli("start", "--data-dir", str(tmp_path / "a-file"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert err.startswith("error: --data-dir ") and "is a file" in err and "Traceback" not in err, err
