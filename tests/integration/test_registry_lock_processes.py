"""Alias moves from separate processes on a real SQLite MLflow store keep every history event (no Ray).

Slow (each process imports MLflow), so it runs in the integration tier; the in-process checks of the
registry lock are in ``tests/unit/test_registry_lock.py``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import RACE_MODEL

from mlops_ray.registry import tracking

MODEL = RACE_MODEL


@pytest.fixture
def store(race_registry):
    """URI of a migrated SQLite MLflow store holding MODEL with 3 versions (tests/conftest.py)."""
    return race_registry


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri, uri)


@pytest.mark.integration  # slow (subprocesses), no Ray: kept out of the fast tier
def test_concurrent_moves_from_separate_processes_keep_every_event(store):
    code = (
        "import sys; from mlflow.tracking import MlflowClient; from mlops_ray.registry import tracking; "
        "u=sys.argv[1]; c=MlflowClient(u,u); "
        "tracking.move_alias(c, sys.argv[2], 'champion', sys.argv[3], action='promote', reason='p'+sys.argv[3])"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, store, MODEL, v]) for v in ("1", "2", "3")]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    history = tracking.alias_history(_client(store), MODEL)
    assert sorted(e["reason"] for e in history) == ["p1", "p2", "p3"]
    assert [e["seq"] for e in history] == [1, 2, 3]
    assert [e["from_version"] for e in history] == [None, history[0]["to_version"], history[1]["to_version"]]
