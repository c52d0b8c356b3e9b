"""``mlops-ray deploy render``: the Serve config and the KubeRay manifests rendered from the project config.

The KubeRay documents are validated against the ``openAPIV3Schema`` of the CRDs of a pinned KubeRay
release (``tests/data/kuberay/<version>/``, see its README) with ``jsonschema``, in strict mode: an
object's unknown fields are errors, as ``kubectl apply`` (``--validate=strict``, its default) makes
them; a CRD schema alone lets the API server drop them silently. The Serve config inside the
RayService is validated with Ray Serve's own ``ServeDeploySchema`` and the builder's ``AppArgs``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from mlops_ray.cli import main
from mlops_ray.config import load_config
from mlops_ray.deploy.render import RAY_VERSION, render
from mlops_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart.yaml"
KUBERAY = ROOT / "tests" / "data" / "kuberay" / "v1.7.0"
CRD_FILES = {
    "RayService": "ray.io_rayservices.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
}
WS, MLFLOW = "s3://acme-ml/mlops", "http://mlflow.mlops.svc:5000"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 1-1.4 MB each


@functools.cache
def crd_schema(kind: str, strict: bool = True) -> dict:
    """The ``openAPIV3Schema`` of ``kind``'s stored version (``ray.io/v1``); strict: unknown fields rejected."""
    crd = yaml.load((KUBERAY / CRD_FILES[kind]).read_text(), Loader=_Loader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    assert version["name"] == "v1"
    schema = version["schema"]["openAPIV3Schema"]
    return _closed(copy.deepcopy(schema)) if strict else schema


def _closed(node):
    """Every object schema with ``properties`` and no rule for other keys allows no other keys."""
    if isinstance(node, dict):
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            _closed(value)
    elif isinstance(node, list):
        for value in node:
            _closed(value)
    return node


def crd_errors(doc: dict, strict: bool = True) -> list[str]:
    validator = jsonschema.Draft4Validator(crd_schema(doc["kind"], strict))
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def _docs(**kw) -> list[dict]:
    args = {"workspace": WS, "tracking_uri": MLFLOW} | kw
    return list(yaml.safe_load_all(render(load_config(EXAMPLE), "kuberay", str(EXAMPLE), **args)))


@pytest.fixture(scope="module")
def docs():
    return {d["kind"]: d for d in _docs(image="ghcr.io/acme/mlops-ray:0.1.0")}


def test_rendered_rayservice_and_rayjob_are_valid_against_the_kuberay_crds(docs):
    assert set(docs) == {"ConfigMap", "RayService", "RayJob"}
    for kind in ("RayService", "RayJob"):
        assert docs[kind]["apiVersion"] == "ray.io/v1"
        assert crd_errors(docs[kind]) == [], kind
    # the cluster spec they share is a valid RayCluster too
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "c"}}
    assert crd_errors({**cluster, "spec": docs["RayJob"]["spec"]["rayClusterSpec"]}) == []


def test_a_wrong_field_or_type_is_rejected(docs):
    bad = copy.deepcopy(docs["RayService"])
    bad["spec"]["rayClusterConfig"]["headGroupSpec"]["serviceTyp"] = "ClusterIP"  # misspelt
    errors = crd_errors(bad)
    assert len(errors) == 1 and "serviceTyp" in errors[0], errors
    assert crd_errors(bad, strict=False) == []  # why strict: the bare schema lets the API server prune it

    bad = copy.deepcopy(docs["RayJob"])
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "four"
    bad["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "off"
    errors = crd_errors(bad, strict=False)
    assert len(errors) == 2, errors
    assert any("maxReplicas" in e and "integer" in e for e in errors), errors
    assert any("authOptions.mode" in e for e in errors), errors


def test_every_ray_container_gets_the_workspace_tracking_uri_and_token_auth(docs):
    for kind, spec in (("RayService", "rayClusterConfig"), ("RayJob", "rayClusterSpec")):
        cluster = docs[kind]["spec"][spec]
        assert cluster["authOptions"] == {"mode": "token"}
        assert cluster["rayVersion"] == RAY_VERSION
        assert cluster["enableInTreeAutoscaling"] is True
        assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
        groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
        for group in groups:
            (container,) = group["template"]["spec"]["containers"]
            assert container["image"] == "ghcr.io/acme/mlops-ray:0.1.0"
            env = {e["name"]: e["value"] for e in container["env"]}
            assert env == {"MLOPS_RAY_HOME": WS, "MLFLOW_TRACKING_URI": MLFLOW, "RAY_AUTH_MODE": "token"}
            assert container["resources"]["requests"] == container["resources"]["limits"]
        names = [g["groupName"] for g in cluster["workerGroupSpecs"]]
        assert names == (["cpu", "gpu"] if kind == "RayJob" else ["cpu"])
    gpu = docs["RayJob"]["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]
    assert gpu["minReplicas"] == 0 and gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]


def test_nothing_is_exposed_outside_the_cluster_and_auth_is_never_disabled(docs):
    text = yaml.safe_dump_all(list(docs.values()))
    assert "LoadBalancer" not in text and "NodePort" not in text and "enableIngress: true" not in text
    assert "disabled" not in text


def test_the_rayjob_runs_the_pipeline_on_the_mounted_config(docs):
    job = docs["RayJob"]["spec"]
    assert job["entrypoint"] == "python /home/ray/mlops-ray/jobs/pipeline.py --config /etc/mlops-ray/config.yaml"
    assert job["shutdownAfterJobFinishes"] is True
    cm = docs["ConfigMap"]
    project = yaml.safe_load(cm["data"]["config.yaml"])
    assert project["mlflow"]["tracking_uri"] == MLFLOW  # the cluster's server, whatever the file said
    # the config the pods read is the user's config, every default made explicit
    original = load_config(EXAMPLE).model_dump(mode="json")
    assert {k: v for k, v in project.items() if k != "mlflow"} == {k: v for k, v in original.items() if k != "mlflow"}
    for spec in (docs["RayService"]["spec"]["rayClusterConfig"], job["rayClusterSpec"]):
        for group in (spec["headGroupSpec"], *spec["workerGroupSpecs"]):
            (volume,) = group["template"]["spec"]["volumes"]
            assert volume["configMap"]["name"] == cm["metadata"]["name"]


def test_serve_config_v2_is_a_string_that_ray_serve_and_the_builder_accept(docs):
    from ray.serve.schema import ServeDeploySchema

    from mlops_ray.serve.app import AppArgs

    text = docs["RayService"]["spec"]["serveConfigV2"]
    assert isinstance(text, str)
    serve_config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(serve_config)
    (app,) = serve_config["applications"]
    AppArgs.model_validate(app["args"])
    assert app["args"] == {"config": "/etc/mlops-ray/config.yaml"}
    # inside the pod, behind ClusterIP: all interfaces, the config's port
    assert serve_config["http_options"] == {"host": "0.0.0.0", "port": load_config(EXAMPLE).serve.port}
    assert serve_config["proxy_location"] == "EveryNode"


def test_serve_target_matches_the_checked_in_quickstart_serve_config():
    """serve_configs/quickstart.yaml is deployed by the e2e tests with `serve deploy`; the rendered config
    differs only in saying what `mlops-ray serve` also sets: the initial replica count."""
    rendered = yaml.safe_load(render(load_config(EXAMPLE), "serve", "examples/quickstart.yaml"))
    checked_in = yaml.safe_load((ROOT / "serve_configs" / "quickstart.yaml").read_text())
    (dep,) = rendered["applications"][0]["deployments"]
    assert dep["autoscaling_config"].pop("initial_replicas") == dep["autoscaling_config"]["min_replicas"]
    assert rendered == checked_in


def test_serve_options_are_what_mlops_ray_serve_deploys():
    from mlops_ray.serve import app

    cfg = load_config(EXAMPLE)
    cfg.serve.max_ongoing_requests, cfg.serve.num_cpus_per_replica, cfg.serve.max_replicas = 7, 1.5, 9
    (dep,) = yaml.safe_load(render(cfg, "serve", "c.yaml"))["applications"][0]["deployments"]
    assert {k: v for k, v in dep.items() if k not in ("name", "user_config")} == app.deployment_options(cfg)
    assert dep["name"] == app.ModelServer.name
    assert (dep["max_ongoing_requests"], dep["ray_actor_options"], dep["autoscaling_config"]["max_replicas"]) == (
        7,
        {"num_cpus": 1.5},
        9,
    )


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"workspace": None}, "needs --workspace"),
        ({"tracking_uri": None}, "no mlflow.tracking_uri"),
        ({"tracking_uri": "sqlite:///tmp/mlflow.db"}, "a file on one machine"),
        ({"tracking_uri": "ftp://x"}, "unsupported scheme"),
    ],
)
def test_kuberay_refuses_what_pods_cannot_reach(kw, needle):
    with pytest.raises(ConfigError, match=needle):
        _docs(**kw)


def test_cli_writes_the_file_and_bad_input_is_one_clean_error(tmp_path):
    out = tmp_path / "k.yaml"
    args = ["deploy", "render", "--config", str(EXAMPLE), "--target", "kuberay", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--workspace", WS, "--tracking-uri", MLFLOW], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert [d["kind"] for d in yaml.safe_load_all(out.read_text())] == ["ConfigMap", "RayService", "RayJob"]
    r = CliRunner().invoke(main, [*args, "--tracking-uri", MLFLOW], catch_exceptions=False)
    assert r.exit_code == 2 and r.stderr.startswith("error: --target kuberay needs --workspace"), r.output
    assert "Traceback" not in r.output
