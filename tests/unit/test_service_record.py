"""The service record (where `mlops-ray serve` records its cluster) lives in the state store."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlops_ray.context import Context
from mlops_ray.errors import ServiceError
from mlops_ray.serve.runner import reload_service, service_record_key

DEAD_PID = 2**22 + 12345  # above Linux's largest pid_max: never a live process


@pytest.fixture
def ctx(tmp_path):
    return Context.create(workspace=tmp_path / "ws")


def _cfg(port=8123):
    return SimpleNamespace(serve=SimpleNamespace(port=port))


def test_record_key_is_todays_workspace_path(ctx):
    key = service_record_key(_cfg(8123))
    assert ctx.state.local_path(key) == ctx.workspace.root / "run" / "serve-8123.json"


def test_reload_without_a_record_names_the_port(ctx):
    with pytest.raises(ServiceError, match="no running service recorded for port 8123"):
        reload_service(ctx, _cfg())


def test_reload_with_a_torn_record_is_a_clean_error(ctx):
    ctx.state.write_bytes(service_record_key(_cfg()), b'{"gcs_address": "127.0.0.1:6')
    with pytest.raises(ServiceError, match="no running service recorded"):
        reload_service(ctx, _cfg())


def test_reload_of_a_dead_service_removes_its_record(ctx):
    key = service_record_key(_cfg())
    ctx.state.write_json(key, {"gcs_address": "127.0.0.1:46379", "pid": DEAD_PID, "url": "http://127.0.0.1:8123"})
    with pytest.raises(ServiceError, match=f"pid {DEAD_PID}.* is not running"):
        reload_service(ctx, _cfg())
    assert not ctx.state.exists(key)
