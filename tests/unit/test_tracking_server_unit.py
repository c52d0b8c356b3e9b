"""The parts of ``mlops_ray/tracking_server.py`` that start nothing (one test starts PostgreSQL's checks on a
directory it refuses). The servers themselves: tests/integration/test_tracking_server.py."""

from __future__ import annotations

import socket

import pytest

from mlops_ray import tracking_server as ts
from mlops_ray.errors import ConfigError, TrackingServerError


# ------------------------------------------------------------------------------- tracking_server.py
@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "*"])
def test_wildcard_hosts_are_refused(host):
    with pytest.raises(ConfigError, match="every interface"):
        ts.check_host(host)


def test_urls_bracket_ipv6_hosts():
    assert ts.url_host("127.0.0.1") == "127.0.0.1" and ts.url_host("fd00::1") == "[fd00::1]"


def test_free_port_binds_on_the_host():
    port = ts.free_port("127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free now


def test_mlflow_allowed_hosts():
    assert ts._allowed_hosts("127.0.0.1", 5000, None) is None  # MLflow's default: localhost, private addresses
    hosts = ts._allowed_hosts("10.200.0.1", 5000, ["mlflow.internal"])
    assert {"10.200.0.1", "10.200.0.1:5000", "mlflow.internal"} <= set(hosts) and "*" not in hosts


def test_postgres_uri_has_no_password_and_env_carries_it(tmp_path):
    pg = ts.Postgres(tmp_path, "127.0.0.1", 5433, tmp_path, tmp_path, "s3cret")
    assert pg.uri == "postgresql+psycopg://mlflow@127.0.0.1:5433/mlflow"
    assert pg.env == {"PGPASSWORD": "s3cret"} and "s3cret" not in repr(pg)


def test_no_binaries_and_not_root_names_what_to_install(monkeypatch):
    monkeypatch.setattr(ts, "find_postgres_bindir", lambda: None)
    monkeypatch.setattr(ts.os, "geteuid", lambda: 1000)
    with pytest.raises(TrackingServerError, match=r"not running as root.*apt-get install postgresql"):
        ts.install_postgres()


def test_no_binaries_and_no_apt_names_what_to_install(monkeypatch):
    monkeypatch.setattr(ts.os, "geteuid", lambda: 0)
    monkeypatch.setattr(ts.shutil, "which", lambda name: None)
    with pytest.raises(TrackingServerError, match=r"apt-get is not available.*initdb, pg_ctl and postgres"):
        ts.install_postgres()


def test_a_non_postgres_directory_is_not_overwritten(tmp_path):
    if ts.find_postgres_bindir() is None:
        pytest.skip("no PostgreSQL server binaries on this machine")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="neither empty nor a PostgreSQL data directory"):
        ts.start_postgres(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_record_tells_a_live_process_from_a_gone_one(tmp_path):
    import os

    me = ts.process_entry(os.getpid())
    assert ts.entry_alive(me)
    assert not ts.entry_alive({"pid": os.getpid(), "started": me["started"] - 100})  # pid reused
    assert not ts.entry_alive({"pid": None}) and not ts.entry_alive(None)
    ts.write_record(tmp_path, {"process": me})
    assert ts.read_record(tmp_path) == {"process": me}
    (tmp_path / ts.RECORD).write_text("{broken")
    with pytest.raises(ConfigError, match="cannot be read"):
        ts.read_record(tmp_path)
