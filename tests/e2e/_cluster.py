"""Helpers for end-to-end tests that start their own `ray start --head` clusters (not a conftest)."""

from __future__ import annotations

import time

import psutil

# Ray Serve binds these at fixed ports unless told otherwise (HAProxy stats 8404 and metrics 9101,
# the fallback proxy 8500 and 9500): two clusters on one host would fight over them.
SERVE_PORT_ENV = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now, outside Ray's worker and the kernel's ephemeral
    ranges (:func:`mlops_ray.ray_runtime.free_ports`): a server binds them later, in another process,
    and a port in either range can be taken in between (a CI run lost a service's port to its own Ray
    cluster's start-up that way)."""
    from mlops_ray.ray_runtime import free_ports as outside_ray_and_ephemeral

    return outside_ray_and_ephemeral(n)


def free_port() -> int:
    """A port free on 127.0.0.1 now: never a fixed one that another test run or service may hold."""
    return free_ports(1)[0]


def serve_port_env() -> dict[str, str]:
    """Environment giving Ray Serve free ports instead of its fixed defaults (see SERVE_PORT_ENV)."""
    return dict(zip(SERVE_PORT_ENV, map(str, free_ports(len(SERVE_PORT_ENV)))))


def head_ports() -> dict[str, int]:
    """Free ports for every fixed-port default of `ray start --head`, keyed by option name.

    Besides GCS (6379) and dashboard (8265): the Ray Client server (10001) and the dashboard
    agent's HTTP port (52365), which `ray job submit` goes through, so a job must never reach
    another cluster's agent.
    """
    names = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port")
    return dict(zip(names, free_ports(len(names))))


def head_args(ports: dict[str, int]) -> list[str]:
    """`ray start` options for :func:`head_ports`."""
    return [f"--{name}={port}" for name, port in ports.items()]


def start_head(env: dict, ports: dict[str, int], *extra: str, cwd=None) -> None:
    """``ray start --head`` on ``ports`` (see :func:`head_ports`) with 2 CPUs, dashboard on 127.0.0.1."""
    import subprocess
    import sys
    from pathlib import Path

    ray = Path(sys.executable).parent / "ray"
    args = [str(ray), "start", "--head", *head_args(ports), "--num-cpus=2", *extra]
    args += ["--dashboard-host=127.0.0.1", "--disable-usage-stats"]
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, timeout=120)


def stop_cluster(gcs_port: int, timeout: float = 5.0) -> None:
    """Stop only the cluster whose GCS listens on ``gcs_port`` (SIGTERM, then SIGKILL after ``timeout``:
    some of Ray's processes ignore SIGTERM, and waiting 30 s for them cost each test's teardown ~30 s).

    `ray stop --force` would kill every Ray process on the machine, including the test session's
    own cluster (and with it the pytest process that is its driver).
    """
    marks = (f":{gcs_port}", f"={gcs_port}")
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(m in arg for arg in cmd for m in marks) and ("ray" in " ".join(cmd)):
            procs.append(p)
    for p in procs:
        try:
            for c in p.children(recursive=True):
                procs.append(c)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    time.sleep(0.5)
    # like `ray stop`: forget the bootstrap address if it names the cluster we just stopped
    import pathlib

    current = pathlib.Path("/tmp/ray/ray_current_cluster")
    try:
        if current.exists() and str(gcs_port) in current.read_text():
            current.unlink()
    except OSError:
        pass
