"""Hardening of local clusters that needs no running Ray: HAProxy template, ports, private dirs."""

from __future__ import annotations

import os
import re
import stat

from mlops_ray import ray_runtime


def test_haproxy_template_binds_stats_and_metrics_on_loopback_and_private_socket():
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE as original

    # Ray's own template exposes both listeners on every interface and a world-writable socket
    assert re.search(r"bind \*?:\{\{ config\.stats_port \}\}", original)
    assert re.search(r"bind \*?:\{\{ config\.metrics_port \}\}", original)
    assert "mode 666 level admin" in original
    patched = ray_runtime.patch_haproxy_template(original)
    assert "bind 127.0.0.1:{{ config.stats_port }}" in patched
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in patched
    assert "mode 600 level admin" in patched and "mode 666" not in patched
    # nothing else changed
    assert len(patched.splitlines()) == len(original.splitlines())
    changed = [(a, b) for a, b in zip(original.splitlines(), patched.splitlines()) if a != b]
    assert len(changed) == 3, changed
    # the frontends keep their configured hosts
    assert "bind {{ config.frontend_host }}:{{ config.frontend_port }}" in patched


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = ray_runtime.free_ports(6)
    assert len(set(ports)) == 6
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_local_cluster_env_gives_ephemeral_ports_and_a_private_haproxy_dir(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # nothing leaks into later tests
    for var in ray_runtime.SERVE_PORT_ENV + ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "12345")  # an explicit choice is kept
    ray_runtime._local_cluster_env()
    ports = [int(os.environ[v]) for v in ray_runtime.SERVE_PORT_ENV]
    assert ports[0] == 12345 and len(set(ports)) == 4 and not set(ports) & {8404, 9101, 8500, 9500}
    d = ray_runtime.haproxy_dir()
    assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] == str(d / "admin.sock")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # Ray puts the socket in a 56-character node directory; unix socket paths are limited to 108 bytes
    assert len(os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"]) + 57 < 100
    assert ray_runtime._HAPROXY_DIR_RE.search(str(d / "x" / "admin.sock")).group(1) == str(os.getpid())


def test_ports_and_paths_chosen_by_a_parent_process_are_not_reused(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    os.environ.update(
        {
            "MLOPS_RAY_CLUSTER_ENV_PID": "1",
            "RAY_SERVE_HAPROXY_STATS_PORT": "23456",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": "/tmp/mlrh-1/admin.sock",
        }
    )
    ray_runtime._local_cluster_env()
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] != "23456"
    assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] == str(ray_runtime.haproxy_dir() / "admin.sock")
    assert os.environ["MLOPS_RAY_CLUSTER_ENV_PID"] == str(os.getpid())
    # a second call in the same process keeps its own choice
    port = os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]
    ray_runtime._local_cluster_env()
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == port
