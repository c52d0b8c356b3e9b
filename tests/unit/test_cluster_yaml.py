"""``cluster.yaml``: valid for Ray's cluster launcher, and a cluster a cloud account could run safely.

Ray's own checks run offline through the compat seam (``compat.validate_cluster_config``: the AWS
defaults filled in as ``ray up`` does, then ``ray-schema.json`` and Ray's rules); no cloud is contacted.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from mlops_ray import compat
from mlops_ray.deploy.render import RAY_VERSION

ROOT = Path(__file__).resolve().parents[2]
TEXT = (ROOT / "cluster.yaml").read_text()


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(TEXT)


def _all_commands(cfg: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")
    keys += ("head_start_ray_commands", "worker_start_ray_commands")
    return [c for k in keys for c in cfg.get(k) or []]


def test_cluster_yaml_passes_rays_validation_after_its_defaults(raw):
    prepared = compat.validate_cluster_config(raw)
    types = prepared["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"} and prepared["head_node_type"] == "head"
    assert types["head"]["max_workers"] == 0  # filled in by Ray
    # the project is installed on every node: Ray merges setup_commands into both lists
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install -q -e ~/mlops-ray" in c for c in prepared[key]), key
    assert prepared["file_mounts"]["~/mlops-ray"] == "."


@pytest.mark.parametrize(
    "change, error",
    [
        (lambda c: c.update(max_worker=3), jsonschema.ValidationError),  # misspelt top-level key
        (lambda c: c["docker"].update(imag="x"), jsonschema.ValidationError),
        (lambda c: c["available_node_types"]["cpu_worker"]["resources"].update(CPU=-1), jsonschema.ValidationError),
        (lambda c: c.update(head_node_type="gpu"), ValueError),  # not a node type
        (lambda c: c["available_node_types"]["cpu_worker"].update(min_workers=7), ValueError),  # > max_workers
    ],
)
def test_rays_validation_rejects_a_broken_variant(raw, change, error):
    bad = copy.deepcopy(raw)
    change(bad)
    with pytest.raises(error):
        compat.validate_cluster_config(bad)


def test_cpu_workers_autoscale_and_a_gpu_worker_type_starts_from_zero(raw):
    types = raw["available_node_types"]
    cpu, gpu = types["cpu_worker"], types["gpu_worker"]
    assert 1 <= cpu["min_workers"] < cpu["max_workers"]
    assert gpu["min_workers"] == 0 < gpu["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))  # AWS GPU families
    assert gpu["docker"]["worker_image"].endswith("-gpu")
    assert raw["max_workers"] == cpu["max_workers"] + gpu["max_workers"]


def test_token_auth_is_on_everywhere_and_never_disabled(raw):
    assert "disabled" not in TEXT
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    for cmd in (c for c in starts if "ray start" in c):
        assert cmd.startswith("RAY_AUTH_MODE=token ray start"), cmd
    assert any("export RAY_AUTH_MODE=token" in c for c in raw["setup_commands"])  # drivers and jobs too
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"  # the same token on every node


def test_the_dashboard_listens_on_loopback_only(raw):
    (head_start,) = [c for c in raw["head_start_ray_commands"] if "ray start" in c]
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in TEXT
    assert "ray dashboard cluster.yaml" in TEXT  # how to reach it: SSH port forwarding


def test_every_node_gets_the_workspace_uri_and_the_tracking_server(raw):
    setup = "\n".join(raw["setup_commands"])
    assert re.search(r"export MLOPS_RAY_HOME=s3://[^\s']+", setup)
    assert re.search(r"export MLFLOW_TRACKING_URI=https?://[^\s']+", setup)
    assert not any("/mnt/shared" in c for c in _all_commands(raw))  # the mount nothing created


def test_the_images_run_the_ray_pinned_by_the_project(raw):
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray_pin,) = [p for p in pins if p.startswith("ray[")]
    assert ray_pin.endswith(f"=={RAY_VERSION}")  # also what the KubeRay manifests declare
    images = [raw["docker"]["image"], raw["available_node_types"]["gpu_worker"]["docker"]["worker_image"]]
    for image in images:
        assert image.startswith(f"rayproject/ray:{RAY_VERSION}-py311"), image
