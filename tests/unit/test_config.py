"""Config loading: bad configs fail before any work, naming the key."""

from __future__ import annotations

import filecmp
from pathlib import Path

import pytest
import yaml

from mlops_ray.config import config_from_dict, load_config
from mlops_ray.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
MIN = {"data": {"name": "d", "source": "x", "id_column": "id", "label_column": "y"}}


def _with(path: str, value):
    raw = yaml.safe_load(yaml.safe_dump(MIN))
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return raw


def test_quickstart_example_loads_and_matches_packaged_copy():
    cfg = load_config(ROOT / "examples" / "quickstart.yaml")
    assert cfg.data.split.fractions == {"train": 0.8, "valid": 0.1, "test": 0.1}
    assert filecmp.cmp(
        ROOT / "examples" / "quickstart.yaml", ROOT / "mlops_ray" / "resources" / "quickstart.yaml", shallow=False
    )


def test_minimal_config_gets_defaults():
    cfg = config_from_dict(MIN)
    assert cfg.data.task == "binary" and cfg.serve.host == "127.0.0.1"


@pytest.mark.parametrize(
    "path,value,expected",
    [
        ("data.split.fractions", {"train": 0.8, "valid": 0.1}, "data.split.fractions: split fractions must sum to 1"),
        ("data.split.fractions", {"valid": 0.5, "test": 0.5}, "a split named 'train' is required"),
        ("data.task", "ranking", "data.task"),
        ("data.colour", "red", "data.colour: unknown key"),
        ("data.preprocessing.numeric.scale", "log", "data.preprocessing.numeric.scale"),
        ("data.numeric_features", ["y"], "must not contain id/label/timestamp"),
        ("data.name", "bad name!", "data.name"),
        ("serve.min_replicas", 5, "serve.max_replicas must be >= serve.min_replicas"),
        ("model.type", "sklearn", "needs model.estimator"),
        ("drift.psi_alert", 0.01, "psi_alert must be >= drift.psi_warn"),
    ],
)
def test_bad_values_name_the_key(path, value, expected):
    with pytest.raises(ConfigError) as ei:
        config_from_dict(_with(path, value))
    assert expected in str(ei.value)


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match="data.id_column: required key is missing"):
        config_from_dict({"data": {"name": "d", "source": "x", "label_column": "y"}})


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "top.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top)


def test_source_paths_resolve_against_config_dir_and_workspace(tmp_path, workspace):
    p = tmp_path / "sub" / "c.yaml"
    p.parent.mkdir()
    p.write_text(yaml.safe_dump(_with("data.source", "raw/x")))
    assert load_config(p).source(workspace.root) == str(tmp_path / "sub" / "raw" / "x")
    p.write_text(yaml.safe_dump(_with("data.source", "{workspace}/raw/q")))
    assert load_config(p).source(workspace.root) == str(workspace.root / "raw" / "q")
    p.write_text(yaml.safe_dump(_with("data.source", "s3://bucket/prefix")))
    assert load_config(p).source(workspace.root) == "s3://bucket/prefix"
