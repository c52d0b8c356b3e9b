"""Shared fixtures.

* Every test gets its own workspace (``MLOPS_RAY_HOME`` in a temp dir), so no test
  sees another's snapshots or MLflow runs.
* ``ray_session``: one real local Ray per test session with explicit ``num_cpus``,
  started only by tests that ask for it; no test calls ``ray.init()`` itself.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLOPS_RAY_PROGRESS", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A fresh, empty workspace per test."""
    from mlops_ray.workspace import get_workspace

    root = tmp_path / "ws"
    monkeypatch.setenv("MLOPS_RAY_HOME", str(root))
    return get_workspace()


@pytest.fixture(params=[0, 1, 12345])
def seed(request):
    """Tests using this hold for several RNG seeds, not a lucky one."""
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray cluster shared by the session (2 CPUs, the size of this machine)."""
    import ray

    from mlops_ray.ray_runtime import ensure_ray

    started = ensure_ray(num_cpus=int(os.environ.get("MLOPS_RAY_TEST_CPUS", "2")), include_dashboard=False,
                         address="local")
    yield ray
    if started:
        ray.shutdown()


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
