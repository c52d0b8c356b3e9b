"""The tracking URI's resolution at entry points: the config's ``mlflow.tracking_uri``, else
``MLFLOW_TRACKING_URI`` (what a cluster's nodes set), else SQLite in the workspace."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner

from mlops_ray.cli import main
from mlops_ray.config import config_from_dict
from mlops_ray.context import Context
from mlops_ray.errors import ConfigError
from mlops_ray.workspace import get_workspace


def _cfg(small_config, **mlflow):
    return config_from_dict({"data": small_config(rows=200, shards=1).data.model_dump(mode="json"), "mlflow": mlflow})


def test_the_environment_uri_is_used_when_the_config_names_none(small_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    ctx = Context.create(_cfg(small_config), workspace=tmp_path / "ws")
    assert ctx.tracking_uri == "http://mlflow.internal:5000"


def test_the_config_uri_wins_over_the_environment(small_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    ctx = Context.create(_cfg(small_config, tracking_uri="http://other:5000"), workspace=tmp_path / "ws")
    assert ctx.tracking_uri == "http://other:5000"


def test_without_either_it_is_sqlite_in_the_workspace(small_config, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = Context.create(_cfg(small_config), workspace=tmp_path / "ws")
    assert ctx.tracking_uri == get_workspace(tmp_path / "ws").mlflow_tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")  # set but blank: not set
    assert Context.create(_cfg(small_config), workspace=tmp_path / "ws").tracking_uri == ctx.tracking_uri


def test_an_unusable_environment_uri_names_the_variable(small_config, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "ftp://nowhere")
    with pytest.raises(ConfigError, match=r"^MLFLOW_TRACKING_URI: unsupported scheme 'ftp'"):
        Context.create(_cfg(small_config), workspace=tmp_path / "ws")


def test_a_cli_command_uses_the_environment_uri(small_config, tmp_path, monkeypatch):
    """The entry point (``mlops-ray models``) goes to the server MLFLOW_TRACKING_URI names (none listens there)."""
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": small_config(rows=200, shards=1).data.model_dump(mode="json")}))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    r = CliRunner().invoke(main, ["models", "--config", str(cfg)], catch_exceptions=False)
    assert r.exit_code == 2, r.output
    assert f"MLflow tracking server {url} is unreachable" in r.stderr


def test_a_context_without_a_config_uses_the_environment_too(tmp_path, monkeypatch):
    """``mlops-ray reproduce RUN_ID`` without --config finds the run on the cluster's server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert Context.create(None, workspace=tmp_path / "ws").tracking_uri == "http://mlflow.internal:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert Context.create(None, workspace=tmp_path / "ws").tracking_uri.startswith("sqlite:///")
