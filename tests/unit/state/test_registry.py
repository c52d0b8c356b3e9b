"""store_for: a URI's scheme picks the StateStore (MLflow ArtifactRepositoryRegistry style)."""

from __future__ import annotations

import pytest

from mlops_ray.state import LocalStateStore, S3StateStore, StateStoreRegistry, register_scheme, store_for
from mlops_ray.state import _registry as default_registry


def test_paths_and_file_uris_give_a_local_store(tmp_path):
    for uri in (str(tmp_path), tmp_path.as_uri(), f"file://localhost{tmp_path}"):
        store = store_for(uri)
        assert isinstance(store, LocalStateStore) and store.root == tmp_path
    with pytest.raises(ValueError, match="no host"):
        store_for("file://elsewhere/x")


@pytest.mark.parametrize(
    "env, endpoint",
    [
        ({}, None),
        ({"MLFLOW_S3_ENDPOINT_URL": "http://mlflow:9000"}, "http://mlflow:9000"),
        ({"AWS_ENDPOINT_URL": "http://aws:1", "MLFLOW_S3_ENDPOINT_URL": "http://mlflow:9000"}, "http://aws:1"),
        ({"AWS_ENDPOINT_URL_S3": "http://s3:2", "AWS_ENDPOINT_URL": "http://aws:1"}, "http://s3:2"),
    ],
)
def test_s3_uri_gives_an_s3_store_with_the_endpoint_from_the_environment(monkeypatch, env, endpoint):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = store_for("s3://bucket/some/prefix/")
    assert isinstance(store, S3StateStore)
    assert (store.bucket, store.prefix, store.endpoint_url, store.uri) == (
        "bucket",
        "some/prefix",
        endpoint,
        "s3://bucket/some/prefix",
    )
    with pytest.raises(ValueError, match="bucket"):
        store_for("s3:///prefix")


def test_unknown_scheme_names_the_registered_ones():
    with pytest.raises(ValueError) as info:
        store_for("gs://bucket/x")
    assert "'gs'" in str(info.value)
    for scheme in ("'file'", "'s3'", "a path"):
        assert scheme in str(info.value)


def test_registered_scheme_is_used(monkeypatch, tmp_path):
    monkeypatch.setattr(default_registry, "_factories", dict(default_registry._factories))
    register_scheme("mem", lambda uri: LocalStateStore(tmp_path / uri.split("://")[1]))
    assert store_for("mem://x").root == tmp_path / "x"
    registry = StateStoreRegistry()
    with pytest.raises(TypeError):
        registry.register("x", "not callable")
    assert registry.schemes() == []
