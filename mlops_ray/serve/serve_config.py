"""The Serve deployment options and Serve config file of the model service, from the project config.

Pure: imports neither Ray nor MLflow. :func:`deployment_options` is what ``mlops-ray serve`` passes to
``ModelServer.options`` (:mod:`mlops_ray.serve.app`); :func:`render_serve_config` writes the same
application as a Ray Serve config file (``serve deploy`` / KubeRay's ``serveConfigV2``), in the shape
of ``serve_configs/quickstart.yaml``.

Example::

    cfg = load_config("examples/quickstart.yaml")
    render_serve_config(cfg, "examples/quickstart.yaml")["applications"][0]["import_path"]
    # 'mlops_ray.serve.app:build_app'
"""

from __future__ import annotations

from typing import Any

from mlops_ray.config import PipelineConfig

APP_NAME = "mlops-ray"  # the Serve application, as `mlops-ray serve` names it
DEPLOYMENT = "ModelServer"
IMPORT_PATH = "mlops_ray.serve.app:build_app"  # the typed builder: build_app(AppArgs)


def deployment_options(cfg: PipelineConfig) -> dict[str, Any]:
    """Replica resources, concurrency limit and autoscaling of the model server, from ``cfg.serve``."""
    s = cfg.serve
    return {
        "ray_actor_options": {"num_cpus": s.num_cpus_per_replica},
        "max_ongoing_requests": s.max_ongoing_requests,
        "autoscaling_config": {
            "min_replicas": s.min_replicas,
            "max_replicas": s.max_replicas,
            "initial_replicas": max(s.min_replicas, 1),
            "target_ongoing_requests": s.target_ongoing_requests,
            "upscale_delay_s": s.upscale_delay_s,
            "downscale_delay_s": s.downscale_delay_s,
            "look_back_period_s": 5.0,
        },
    }


def user_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The replica settings a Serve config may change without restarting replicas (``reconfigure``)."""
    s = cfg.serve
    return {
        "poll_interval_s": s.poll_interval_s,
        "max_batch_size": s.max_batch_size,
        "batch_wait_timeout_s": s.batch_wait_timeout_s,
    }


def render_serve_config(
    cfg: PipelineConfig,
    config_path: str,
    *,
    workspace: str | None = None,
    http_host: str | None = None,
    proxy_location: str = "HeadOnly",
) -> dict[str, Any]:
    """A Ray Serve config (``ServeDeploySchema`` as a dict) serving ``cfg``'s model like ``mlops-ray serve``.

    Args:
        cfg: the validated project config.
        config_path: the project config as the replicas will find it (``args.config`` of
            :func:`~mlops_ray.serve.app.build_app`: absolute, or relative to ``$MLOPS_RAY_PROJECT_DIR``
            or the working directory of ``serve deploy``).
        workspace: ``args.workspace`` (None: the replicas' ``$MLOPS_RAY_HOME``).
        http_host: where Serve's proxies listen (None: ``cfg.serve.host``).
        proxy_location: ``HeadOnly`` (one node, loopback) or ``EveryNode`` (a cluster behind a service).
    """
    args: dict[str, Any] = {"config": config_path}
    if workspace is not None:
        args["workspace"] = workspace
    return {
        "proxy_location": proxy_location,
        "http_options": {"host": http_host or cfg.serve.host, "port": cfg.serve.port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args,
                "deployments": [{"name": DEPLOYMENT, **deployment_options(cfg), "user_config": user_config(cfg)}],
            }
        ],
    }
