"""Hardening of local clusters that needs no running Ray: ports, private dirs, the reaper.

The patches of Ray internals (HAProxy template, replica gRPC, worker hook) are tested in test_compat.py."""

from __future__ import annotations

import os
import stat

from mlops_ray import ray_runtime


def test_free_ports_are_distinct_and_bindable():
    import socket

    from mlops_ray import ports as port_rules

    ports = ray_runtime.free_ports(6)
    assert len(set(ports)) == 6
    lo = port_rules.ephemeral_range()[0]
    if lo > port_rules.FREE_PORT_LOW + 1_000:  # neither a Ray worker's port nor an ephemeral one
        assert all(port_rules.FREE_PORT_LOW <= p < lo for p in ports), ports
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_free_ports_on_ipv6_loopback_and_a_foreign_address():
    import socket

    import pytest

    from mlops_ray import ports as port_rules

    if socket.has_ipv6:
        try:
            (p,) = port_rules.free_ports(1, "::1")
        except OSError:
            pass  # no IPv6 loopback in this namespace
        else:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", p))
    with pytest.raises(OSError):  # TEST-NET-1: not an address of this machine
        port_rules.free_ports(1, "192.0.2.1")


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
    # a second local cluster in the same process gets fresh ports (the first one's HAProxy may still
    # hold its own for a moment), and the same private directory
    port = os.environ["RAY_SERVE_HAPROXY_STATS_PORT"]
    ray_runtime._local_cluster_env()
    assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] != port
    assert os.environ["RAY_SERVE_HAPROXY_SOCKET_PATH"] == str(ray_runtime.haproxy_dir() / "admin.sock")


def test_ports_the_user_set_are_kept(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(ray_runtime, "_CHOSEN_PORTS", set())
    os.environ.pop("MLOPS_RAY_CLUSTER_ENV_PID", None)
    os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] = "23457"
    for _ in range(2):
        ray_runtime._local_cluster_env()
        assert os.environ["RAY_SERVE_HAPROXY_STATS_PORT"] == "23457"


def test_reaper_kills_what_a_sigkilled_owner_started_and_nothing_else(tmp_path):
    """An owner starts a grandchild; the owner is SIGKILLed; the reaper ends the grandchild only."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    import psutil

    from mlops_ray.reaper import watch

    owner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess,sys,time; subprocess.Popen(['sleep','60']); time.sleep(60)"]
    )
    bystander = subprocess.Popen(["sleep", "60"])  # not the owner's: must survive
    try:
        deadline = time.time() + 10
        while time.time() < deadline and not psutil.Process(owner.pid).children():
            time.sleep(0.05)
        (child,) = psutil.Process(owner.pid).children()
        result = {}
        t = threading.Thread(target=lambda: result.update(killed=watch(owner.pid, poll_s=0.05)))
        t.start()
        time.sleep(0.3)  # the reaper has seen the tree
        owner.send_signal(signal.SIGKILL)
        owner.wait(5)
        t.join(10)
        assert result["killed"] == [child.pid]
        deadline = time.time() + 5
        while time.time() < deadline and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        assert bystander.poll() is None
    finally:
        for p in (owner, bystander):
            p.kill()
            p.wait(5)
