"""Starting, reloading and stopping the model service (the Ray Serve glue for the CLI)."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import TYPE_CHECKING

import httpx

from mlops_ray.serve.serve_config import APP_NAME

if TYPE_CHECKING:
    from mlops_ray.config import PipelineConfig
    from mlops_ray.context import Context


def service_url(cfg: PipelineConfig) -> str:
    return cfg.serve.url


def wait_healthy(url: str, timeout_s: float = 120.0) -> dict:
    """Poll ``GET /health`` until 200; returns its JSON."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        try:
            r = httpx.get(f"{url}/health", timeout=2.0)
            if r.status_code == 200:
                return r.json()
            last = r.text
        except httpx.HTTPError as err:
            last = repr(err)
        time.sleep(0.25)
    raise TimeoutError(f"service at {url} not healthy after {timeout_s:.0f}s: {last}")


def service_record_key(cfg: PipelineConfig) -> str:
    """The state key (``ctx.state``) where a running ``mlops-ray serve`` records its cluster, so later
    commands find *that* cluster: ``{"gcs_address", "pid", "url"}``."""
    return f"run/serve-{cfg.serve.port}.json"


def _check_port_free(host: str, port: int) -> None:
    import socket

    from mlops_ray.errors import ServiceError

    # As a server binds it (uvicorn, HAProxy): SO_REUSEADDR, so connections of a service killed a moment
    # ago that linger in TIME_WAIT do not count, a socket still listening on the port does.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as err:
            raise ServiceError(
                f"serve.port {port} on {host} is in use ({err.strerror}); another service holds it: "
                "stop it or give this one another serve.port"
            ) from None


def start_service(ctx: Context, cfg: PipelineConfig, *, timeout_s: float = 180.0) -> str:
    """Deploy the app on the current (or a new local) Ray cluster; returns the base URL once healthy."""
    import ray
    from ray import serve

    from mlops_ray.errors import ModelVersionNotFoundError
    from mlops_ray.ray_runtime import ensure_ray
    from mlops_ray.registry import tracking
    from mlops_ray.serve.app import build_from_config

    if tracking.alias_version(ctx.client, cfg.registry.model_name, cfg.serve.model_alias) is None:
        raise ModelVersionNotFoundError(
            f"model {cfg.registry.model_name!r} has no '{cfg.serve.model_alias}' version "
            "to serve; train and promote one first (mlops-ray train / promote)"
        )
    _check_port_free(cfg.serve.host, cfg.serve.port)
    ensure_ray(serving=True)
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    if cfg.drift.enabled:  # one monitor, started before the replicas that feed it
        from mlops_ray.drift.monitor import ensure_monitor

        create = {"drift": cfg.drift.model_dump(), "state": ctx.state, "tracking_uri": ctx.tracking_uri}
        ensure_monitor(cfg.registry.model_name, create)
    serve.run(build_from_config(ctx, cfg), name=APP_NAME, route_prefix="/", blocking=False)
    url = service_url(cfg)
    wait_healthy(url, timeout_s)
    record = {"gcs_address": ray.get_runtime_context().gcs_address, "pid": os.getpid(), "url": url}
    ctx.state.write_json(service_record_key(cfg), record)
    return url


def reload_service(ctx: Context, cfg: PipelineConfig) -> None:
    """Make every replica of the running service check the registry now (a user_config change
    reconfigures replicas in place). Joins the cluster that ``mlops-ray serve`` recorded for this
    config's port in the workspace, never "whatever cluster the host has"."""
    import psutil
    from ray import serve

    from mlops_ray.errors import ServiceError
    from mlops_ray.ray_runtime import ensure_ray
    from mlops_ray.serve.app import build_from_config

    key = service_record_key(cfg)
    rec = ctx.state.read_json(key)
    if not isinstance(rec, dict) or not {"gcs_address", "pid"} <= rec.keys():
        raise ServiceError(
            f"no running service recorded for port {cfg.serve.port} in {ctx.state.uri} "
            f"(start one with: mlops-ray serve --config FILE)"
        )
    if not psutil.pid_exists(int(rec["pid"])):
        ctx.state.delete(key)
        raise ServiceError(f"the service recorded for port {cfg.serve.port} (pid {rec['pid']}) is not running")
    ensure_ray(address=rec["gcs_address"])
    serve.run(
        build_from_config(ctx, cfg, reload_token=uuid.uuid4().hex), name=APP_NAME, route_prefix="/", blocking=False
    )


def stop_service() -> None:
    from ray import serve

    from mlops_ray.drift.monitor import stop_all_monitors

    serve.delete(APP_NAME, _blocking=True)
    serve.shutdown()
    stop_all_monitors()  # detached actors: they would outlive the service on a shared cluster


def _hard_exit(code: int = 130) -> None:
    """Second signal during shutdown: end everything this process started, now."""
    import psutil

    from mlops_ray.ray_runtime import kill_own_haproxy

    for child in psutil.Process().children(recursive=True):
        try:
            child.kill()
        except psutil.Error:
            pass
    kill_own_haproxy()
    os._exit(code)


def serve_forever(ctx: Context, cfg: PipelineConfig, echo=print, *, shutdown_timeout_s: float = 4.0) -> None:
    """Run the service in the foreground until Ctrl-C or SIGTERM, then shut down what we started.

    The first signal starts a shutdown bounded by ``shutdown_timeout_s`` (then the cluster is
    ended regardless); a second signal ends everything at once. HAProxy, raylet and workers
    never outlive this process (see :mod:`mlops_ray.ray_runtime`).
    """
    import ray

    from mlops_ray.ray_runtime import ensure_ray, haproxy_dir, kill_own_haproxy
    from mlops_ray.reaper import start_reaper

    stop = threading.Event()

    def on_signal(*_):
        if stop.is_set():
            _hard_exit()
        stop.set()

    # Handlers first (after ray.init, which installs its own): a signal during start-up still
    # ends in the clean shutdown below.
    ensure_ray(serving=True)
    # Whatever ends this process (even SIGKILL), a watchdog ends what it started.
    start_reaper(mark=str(haproxy_dir()) + "/")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        url = start_service(ctx, cfg)
        echo(f"serving {cfg.registry.model_name}@{cfg.serve.model_alias} at {url}  (docs: {url}/docs; Ctrl-C to stop)")
        while not stop.wait(0.2):
            pass
        echo("shutting down ...")
        t0 = time.monotonic()
        t = threading.Thread(target=_stop_serve, daemon=True)
        t.start()
        t.join(shutdown_timeout_s)
    finally:
        ctx.state.delete(service_record_key(cfg))
        ray.shutdown()
        kill_own_haproxy()
    echo(f"stopped in {time.monotonic() - t0:.1f}s")


def _stop_serve() -> None:
    """Serve's own shutdown (drains in-flight requests, stops replicas and HAProxy); it deletes the
    application too, which an explicit ``serve.delete`` first only made slower (3 s idle)."""
    from ray import serve

    from mlops_ray.drift.monitor import stop_all_monitors

    serve.shutdown()
    stop_all_monitors()
