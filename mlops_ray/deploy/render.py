"""Deployment files rendered from the project config: a Ray Serve config, or KubeRay manifests.

Pure: imports neither Ray nor MLflow, touches no cluster. ``mlops-ray deploy render`` calls
:func:`render`, which returns the YAML text.

* ``serve``: the Serve config of :func:`~mlops_ray.serve.serve_config.render_serve_config`, the shape
  of ``serve_configs/quickstart.yaml``.
* ``kuberay``: three documents for ``kubectl apply -f``: a ConfigMap holding the project config (the
  tracking URI resolved), a RayService whose ``serveConfigV2`` is the Serve config as a string, and a
  RayJob running ``jobs/pipeline.py``. Every Ray container gets ``MLOPS_RAY_HOME`` (the workspace URI),
  ``MLFLOW_TRACKING_URI`` and ``RAY_AUTH_MODE=token``; ``authOptions.mode: token`` makes KubeRay create
  the token Secret and hand it to every pod and the job submitter. The head service is ClusterIP
  (reach the dashboard with ``kubectl port-forward``); nothing is exposed as a LoadBalancer or NodePort.

Example::

    text = render(load_config("examples/quickstart.yaml"), "kuberay", "examples/quickstart.yaml",
                  image="ghcr.io/acme/mlops-ray:0.1.0", workspace="s3://acme-ml/mlops",
                  tracking_uri="http://mlflow.mlops.svc:5000")
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from mlops_ray.config import PipelineConfig, tracking_uri_problem
from mlops_ray.errors import ConfigError
from mlops_ray.serve.serve_config import render_serve_config

TARGETS = ("serve", "kuberay")
RAY_VERSION = "2.60.0"  # the Ray pinned in pyproject.toml; KubeRay needs >= 2.52.0 for token auth
DEFAULT_IMAGE = "mlops-ray:0.1.0"  # rayproject/ray:2.60.0-py311 + this repository at APP_DIR (README)
APP_DIR = "/home/ray/mlops-ray"  # where the image holds the repository (jobs/ lives there)
CONFIG_DIR = "/etc/mlops-ray"  # the ConfigMap's mount in every Ray container
CONFIG_FILE = "config.yaml"
_VOLUME = "mlops-ray-config"

# Pod sizes. Requests equal limits: Ray sizes its resources from the limits and the scheduler
# then reserves exactly that. The head runs no tasks (num-cpus 0): drivers, GCS, Serve controller.
HEAD = {"cpu": "2", "memory": "8Gi"}
CPU_WORKER = {"cpu": "4", "memory": "16Gi"}
GPU_WORKER = {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
CPU_WORKERS = (1, 4)  # min, max replicas (the in-tree autoscaler moves between them)
GPU_WORKERS = (0, 2)  # training only (RayJob): scaled up from zero when a task asks for a GPU


def render(
    cfg: PipelineConfig,
    target: str,
    config_path: str,
    *,
    image: str | None = None,
    workspace: str | None = None,
    tracking_uri: str | None = None,
) -> str:
    """YAML text for ``target`` (``serve`` or ``kuberay``). Raises ConfigError naming what to fix."""
    if target == "serve":
        return to_yaml(render_serve_config(cfg, config_path, workspace=workspace))
    if target == "kuberay":
        docs = kuberay_manifests(cfg, image=image or DEFAULT_IMAGE, workspace=workspace, tracking_uri=tracking_uri)
        return to_yaml(*docs)
    raise ConfigError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded configs) as ``|`` blocks a person can read; no anchors."""

    def ignore_aliases(self, data):
        return True


def _str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(*docs: dict[str, Any]) -> str:
    """One YAML document per mapping (``---`` between them), keys in the order given."""
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False)


def resource_name(model_name: str) -> str:
    """A Kubernetes name (DNS-1123 label, short enough for KubeRay's suffixes) from a model name."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")[:40].rstrip("-")
    return name or "mlops-ray"


def cluster_tracking_uri(cfg: PipelineConfig, override: str | None) -> str:
    """The MLflow tracking URI every pod uses: ``override``, else ``mlflow.tracking_uri``; never a local file."""
    uri = override or cfg.mlflow.tracking_uri
    fix = "pass --tracking-uri http(s)://HOST:PORT (an MLflow server) or set mlflow.tracking_uri in the config"
    if not uri:
        raise ConfigError(f"the config has no mlflow.tracking_uri (the default is SQLite in the workspace); {fix}")
    problem = tracking_uri_problem(uri)
    if problem:
        raise ConfigError(f"--tracking-uri {problem}")
    if uri.startswith(("sqlite:", "file:")) or "{workspace}" in uri or "://" not in uri:
        raise ConfigError(f"MLflow tracking URI {uri!r} is a file on one machine, which pods do not share; {fix}")
    return uri


def _check_workspace(workspace: str | None) -> str:
    if not workspace:
        raise ConfigError(
            "--target kuberay needs --workspace URI: storage every pod sees (s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, "
            "or the path of a shared volume mounted in every pod)"
        )
    return workspace


def _check_source(cfg: PipelineConfig) -> None:
    source = cfg.data.source
    if "{workspace}" in source or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", source) or source.startswith("/"):
        return
    raise ConfigError(
        f"data.source {source!r} is a path relative to the config on this machine, which pods do not see; "
        "use {workspace}/..., an object-store URI or an absolute path on a volume every pod mounts"
    )


def project_config_yaml(cfg: PipelineConfig, tracking_uri: str) -> str:
    """The project config as the pods read it: every key resolved, the cluster's tracking URI set."""
    raw = cfg.model_dump(mode="json")
    raw["mlflow"]["tracking_uri"] = tracking_uri
    return to_yaml(raw)


def kuberay_manifests(
    cfg: PipelineConfig, *, image: str, workspace: str | None, tracking_uri: str | None
) -> list[dict[str, Any]]:
    """ConfigMap, RayService and RayJob (``ray.io/v1``) serving and training ``cfg``'s model."""
    ws = _check_workspace(workspace)
    uri = cluster_tracking_uri(cfg, tracking_uri)
    _check_source(cfg)
    name = resource_name(cfg.registry.model_name)
    env = [
        {"name": "MLOPS_RAY_HOME", "value": ws},
        {"name": "MLFLOW_TRACKING_URI", "value": uri},
        {"name": "RAY_AUTH_MODE", "value": "token"},  # never disabled: pods share the network with others
    ]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "labels": _labels(name)},
        "data": {CONFIG_FILE: project_config_yaml(cfg, uri)},
    }
    config_path = f"{CONFIG_DIR}/{CONFIG_FILE}"
    # In a pod the proxy listens on all of the pod's interfaces; KubeRay's ClusterIP serve service
    # routes to every node's proxy.
    serve_config = render_serve_config(cfg, config_path, http_host="0.0.0.0", proxy_location="EveryNode")
    pod = {"image": image, "env": env, "config_map": config_map["metadata"]["name"], "serve_port": cfg.serve.port}
    service = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name, "labels": _labels(name)},
        "spec": {
            "serveConfigV2": to_yaml(serve_config),
            "rayClusterConfig": ray_cluster_spec(**pod, gpu_workers=False),
        },
    }
    job = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": f"{name}-pipeline", "labels": _labels(name)},
        "spec": {
            "entrypoint": f"python {APP_DIR}/jobs/pipeline.py --config {config_path}",
            "shutdownAfterJobFinishes": True,  # the cluster goes when the run ends...
            "ttlSecondsAfterFinished": 600,  # ...ten minutes later, to read its logs
            "rayClusterSpec": ray_cluster_spec(**pod, gpu_workers=True),
        },
    }
    return [config_map, service, job]


def _labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "mlops-ray", "app.kubernetes.io/instance": name}


def _container(name: str, image: str, env: list, size: dict[str, str], ports: list | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "env": env,
        "resources": {"requests": dict(size), "limits": dict(size)},
        "volumeMounts": [{"name": _VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    if ports:
        container["ports"] = ports
    return container


def _pod_template(container: dict[str, Any], config_map: str) -> dict[str, Any]:
    return {"spec": {"containers": [container], "volumes": [{"name": _VOLUME, "configMap": {"name": config_map}}]}}


def ray_cluster_spec(*, image: str, env: list, config_map: str, serve_port: int, gpu_workers: bool) -> dict[str, Any]:
    """A ``RayClusterSpec``: head (ClusterIP, no tasks), autoscaling CPU workers, optionally GPU workers."""
    ports = [
        {"containerPort": 6379, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": serve_port, "name": "serve"},
    ]
    groups = [
        {
            "groupName": "cpu",
            "replicas": CPU_WORKERS[0],
            "minReplicas": CPU_WORKERS[0],
            "maxReplicas": CPU_WORKERS[1],
            "rayStartParams": {},
            "template": _pod_template(_container("ray-worker", image, env, CPU_WORKER), config_map),
        }
    ]
    if gpu_workers:
        gpu = _pod_template(_container("ray-worker", image, env, GPU_WORKER), config_map)
        gpu["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        groups.append(
            {
                "groupName": "gpu",
                "replicas": GPU_WORKERS[0],
                "minReplicas": GPU_WORKERS[0],
                "maxReplicas": GPU_WORKERS[1],
                "rayStartParams": {},
                "template": gpu,
            }
        )
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "authOptions": {"mode": "token"},
        "headGroupSpec": {
            "serviceType": "ClusterIP",  # the dashboard and GCS stay inside the cluster
            "rayStartParams": {"num-cpus": "0"},
            "template": _pod_template(_container("ray-head", image, env, HEAD, ports), config_map),
        },
        "workerGroupSpecs": groups,
    }
