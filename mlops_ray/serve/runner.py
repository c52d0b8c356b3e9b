"""Starting, reloading and stopping the model service (the Ray Serve glue for the CLI)."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import httpx

APP_NAME = "mlops-ray"


def service_url(cfg) -> str:
    return f"http://{cfg.serve.host}:{cfg.serve.port}"


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


def start_service(ctx, cfg, *, timeout_s: float = 180.0) -> str:
    """Deploy the app on the current (or a new local) Ray cluster; returns the base URL once healthy."""
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
    ensure_ray()
    serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    serve.run(build_from_config(ctx, cfg), name=APP_NAME, route_prefix="/", blocking=False)
    url = service_url(cfg)
    wait_healthy(url, timeout_s)
    return url


def reload_service(ctx, cfg) -> None:
    """Make every replica check the registry now (a user_config change reconfigures replicas in place)."""
    from ray import serve

    from mlops_ray.ray_runtime import ensure_ray
    from mlops_ray.serve.app import build_from_config

    ensure_ray(address="auto")
    serve.run(
        build_from_config(ctx, cfg, reload_token=uuid.uuid4().hex), name=APP_NAME, route_prefix="/", blocking=False
    )


def stop_service() -> None:
    from ray import serve

    serve.delete(APP_NAME, _blocking=True)
    serve.shutdown()


def serve_forever(ctx, cfg, echo=print) -> None:
    """Run the service in the foreground until Ctrl-C or SIGTERM, then shut down what we started."""
    import ray

    stop = threading.Event()
    # Handlers first (after ray.init, which installs its own): a signal during start-up still
    # ends in the clean shutdown below.
    from mlops_ray.ray_runtime import ensure_ray

    ensure_ray()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    url = start_service(ctx, cfg)
    echo(f"serving {cfg.registry.model_name}@{cfg.serve.model_alias} at {url}  (docs: {url}/docs; Ctrl-C to stop)")
    while not stop.is_set():
        stop.wait(1.0)
    echo("shutting down ...")
    stop_service()
    ray.shutdown()
