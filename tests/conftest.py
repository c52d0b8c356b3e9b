"""Shared fixtures.

* Every test gets its own workspace (``MLOPS_RAY_HOME`` in a temp dir), so no test
  sees another's snapshots or MLflow runs. Integration and e2e tests find a migrated
  SQLite MLflow store there, copied from one made once per session.
* ``ray_session``: one real local Ray per test session with explicit ``num_cpus``,
  started only by tests that ask for it; no test calls ``ray.init()`` itself.
* Unit tests (neither ``integration`` nor ``e2e``) cannot start Ray: ``ray.init`` fails
  the test, and a test that leaves Ray running fails.
* MLflow isolation as in MLflow's own ``tests/conftest.py``: a test that leaks an active
  run fails (the run is ended), and the tracking/registry URIs and their environment
  variables are reset after every test. Unit tests that never import MLflow pay nothing.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

SERVICE_MARKERS = ("integration", "e2e")
MLFLOW_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _uses_services(node) -> bool:
    """True for tests allowed to start Ray and use MLflow stores (marked integration or e2e)."""
    return any(node.get_closest_marker(m) is not None for m in SERVICE_MARKERS)


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now, outside Ray's worker and the kernel's ephemeral
    ranges (:func:`mlops_ray.ray_runtime.free_ports`)."""
    from mlops_ray.ray_runtime import free_ports

    return free_ports(n)


# ------------------------------------------------------------------ workspace + MLflow store
@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory):
    """One migrated SQLite MLflow database per session (creating and migrating one takes ~2 s)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "template.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates + migrates the schema
    return path


@pytest.fixture(autouse=True)
def workspace(request, tmp_path, monkeypatch):
    """A fresh, empty workspace per test; for integration/e2e tests with a ready MLflow store."""
    from mlops_ray.workspace import get_workspace

    root = tmp_path / "ws"
    monkeypatch.setenv("MLOPS_RAY_HOME", str(root))
    ws = get_workspace()
    if _uses_services(request.node):  # only these use MLflow: unit tests never import it
        ws.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("mlflow_db_template"), ws.mlflow_db)
    return ws


RACE_MODEL = "race-model"


@pytest.fixture
def race_registry(workspace, mlflow_db_template):
    """URI of a migrated SQLite MLflow store holding RACE_MODEL with 3 versions (registry-lock races)."""
    from mlflow.tracking import MlflowClient

    workspace.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_db_template, workspace.mlflow_db)
    uri = workspace.mlflow_tracking_uri
    c = MlflowClient(uri, uri)
    c.create_registered_model(RACE_MODEL)
    for _ in range(3):
        c.create_model_version(RACE_MODEL, "file:///nonexistent/model", run_id=None)
    return uri


def _mlflow_uris() -> tuple[str | None, str | None]:
    """The tracking and registry URIs set in-process (None: not set, MLflow resolves env/default)."""
    if "mlflow" not in sys.modules:
        return None, None  # a first import starts with neither set
    from mlops_ray import compat

    # The explicitly set values, not get_tracking_uri(): restoring a resolved default would pin
    # it and hide a later MLFLOW_TRACKING_URI.
    return compat.fluent_uris()


@pytest.fixture(autouse=True)
def mlflow_isolation(monkeypatch):
    """Fail a test that leaks an active MLflow run; reset MLflow's URIs and their env vars afterwards."""
    for var in MLFLOW_URI_ENV:
        # mlflow.set_*_uri write os.environ themselves; registering the current value (or its
        # absence) with monkeypatch makes the undo restore it whatever the test or MLflow did.
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
        else:
            monkeypatch.setenv(var, "")
            monkeypatch.delenv(var)
    tracking_uri, registry_uri = _mlflow_uris()
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is None:
        return
    leaked = mlflow.active_run()
    try:
        while mlflow.active_run() is not None:  # end against the store the test used, before the reset
            mlflow.end_run()
    finally:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)
    if leaked is not None:
        pytest.fail(
            f"the test left MLflow run {leaked.info.run_id} active (ended it now); "
            "end runs with `with mlflow.start_run():` or mlflow.end_run()",
            pytrace=False,
        )


# ------------------------------------------------------------------ Ray
@pytest.fixture(autouse=True)
def no_ray_in_unit_tests(request, monkeypatch):
    """Unit tests must not start Ray: ``ray.init`` fails them, and Ray left running fails them.

    Tests marked ``integration`` or ``e2e`` are untouched (they use ``ray_session``).
    """
    if _uses_services(request.node):
        yield
        return
    try:
        import ray
    except ImportError:
        yield
        return
    message = "unit tests must not start Ray; mark the test `integration` (or `e2e`) and use the ray_session fixture"

    def refuse(*args, **kwargs):
        pytest.fail(message, pytrace=False)  # BaseException: an `except Exception` cannot swallow it

    monkeypatch.setattr(ray, "init", refuse)  # also what Ray's auto-init calls
    worker_module = getattr(getattr(ray, "_private", None), "worker", None)
    if getattr(worker_module, "init", None) is not None:  # the same function, by its home module
        monkeypatch.setattr(worker_module, "init", refuse)
    # A full run reaches the unit tests with the session's cluster up: only a new one counts.
    running_before = ray.is_initialized()
    yield
    if not running_before and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"Ray was left running (shut it down now): {message}", pytrace=False)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray cluster shared by the session (2 CPUs, the size of this machine)."""
    import ray

    from mlops_ray.ray_runtime import ensure_ray

    # Serve's HAProxy and fallback proxy bind fixed ports by default (8404, 9101, 8500, 9500):
    # ephemeral ones let this session's Serve coexist with another cluster's on the same host.
    serve_port_env = (
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
    )
    for var, port in zip(serve_port_env, _free_ports(len(serve_port_env))):
        os.environ.setdefault(var, str(port))
    started = ensure_ray(
        num_cpus=int(os.environ.get("MLOPS_RAY_TEST_CPUS", "2")), include_dashboard=False, address="local"
    )
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(params=[0, 1, 12345])
def seed(request):
    """Tests using this hold for several RNG seeds, not a lucky one."""
    return request.param


@pytest.fixture
def small_config(tmp_path):
    """Factory: a PipelineConfig over freshly generated sample data, shrunk for tests."""
    from mlops_ray.config import config_from_dict
    from mlops_ray.data.generate import FEATURE_SPEC, generate_dataset

    def make(rows=3000, shards=3, seed=0, drift=0.0, **data_overrides):
        src = tmp_path / f"src-{rows}-{shards}-{seed}-{drift}"
        if not src.exists():
            generate_dataset(src, rows, shards=shards, seed=seed, drift=drift)
        data = {
            "name": "unit",
            "source": str(src),
            "id_column": FEATURE_SPEC["id_column"],
            "label_column": FEATURE_SPEC["label_column"],
            "timestamp_column": FEATURE_SPEC["timestamp_column"],
            "numeric_features": list(FEATURE_SPEC["numeric"]),
            "categorical_features": list(FEATURE_SPEC["categorical"]),
            "batch_size": 1024,
        }
        data.update(data_overrides)
        return config_from_dict({"data": data})

    return make


# ------------------------------------------------------------------ S3
@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server on loopback (moto's, one request at a time: see tests/_s3.py), one per session."""
    from tests._s3 import S3Server

    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_bucket(s3_server):
    """A bucket on ``s3_server`` (tests keep apart by prefix)."""
    s3_server.client().create_bucket(Bucket="mlops-ray-state")
    return "mlops-ray-state"
