"""A workspace on an object store (``MLOPS_RAY_HOME=s3://bucket/prefix``) through the real clients:
``pyarrow.fs.S3FileSystem`` for snapshots and boto3 for the state store, against an S3-compatible
server over real HTTP on loopback (moto's, see tests/_s3.py). No Ray: the Ray Data path over the same
store runs on the two-node cluster (tests/integration/test_multinode.py).

Integration tier: a real server and many HTTP requests (a few seconds), not pure logic."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_ray.context import Context
from mlops_ray.data.prepare import FINGERPRINT_CACHE, prepare_snapshot
from mlops_ray.data.snapshot import MANIFEST, SnapshotStore
from mlops_ray.errors import ConfigError, SnapshotCorruptError
from mlops_ray.storage import Location
from mlops_ray.workspace import get_workspace
from tests._s3 import ACCESS

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_workspace(s3_server, s3_bucket, monkeypatch, tmp_path):
    """``MLOPS_RAY_HOME`` on the S3 server (a fresh prefix), credentials and endpoint in the environment
    the way a cluster node gets them; this machine's local part in ``tmp_path/local``."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ACCESS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", ACCESS["region_name"])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("MLOPS_RAY_LOCAL_DIR", str(tmp_path / "local"))
    prefix = f"ws-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MLOPS_RAY_HOME", f"s3://{s3_bucket}/{prefix}")
    return get_workspace(), s3_bucket, prefix


def _keys(s3_server, bucket, prefix):
    pages = s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    return sorted(o["Key"][len(prefix) + 1 :] for p in pages for o in p.get("Contents", []))


def test_snapshot_lives_in_the_bucket_and_reads_back(small_config, s3_workspace, s3_server, tmp_path):
    ws, bucket, prefix = s3_workspace
    assert ws.uri == f"s3://{bucket}/{prefix}" and ws.root == tmp_path / "local"
    cfg = small_config(rows=2000)
    res = prepare_snapshot(cfg.data, ws, engine="local")
    snap = res.snapshot
    assert not res.reused
    assert str(snap.path) == f"s3://{bucket}/{prefix}/datasets/unit/{snap.id}"
    keys = _keys(s3_server, bucket, prefix)
    recorded = {f"datasets/unit/{snap.id}/{rel}" for rel in snap.manifest["files"]}
    assert recorded | {f"datasets/unit/{snap.id}/{MANIFEST}"} <= set(keys)
    assert not [k for k in keys if "/.staging-" in k], "the staging prefix is removed after publication"
    assert FINGERPRINT_CACHE in keys
    # Nothing of the snapshot on this machine's disk.
    assert not (tmp_path / "local" / "datasets").exists()
    # The split files are s3:// URIs that pyarrow reads from any node with the same environment.
    files = snap.split_files("train")
    assert files and all(f.startswith(f"s3://{bucket}/") for f in files)
    train = pd.concat([pq.read_table(f).to_pandas() for f in files])
    assert len(train) == snap.rows("train")
    assert snap.verify().files == len(snap.manifest["files"])
    assert snap.preprocessor().feature_names == snap.manifest["feature_names"]
    assert set(snap.reference_stats()["numeric"]) == set(cfg.data.numeric_features)
    # Found again by a fresh store (listing the bucket), and reused without rewriting.
    store = SnapshotStore(get_workspace())
    assert store.find("unit@latest").id == snap.id
    again = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    assert again.reused and again.snapshot.id == snap.id
    assert _keys(s3_server, bucket, prefix) == keys


def test_usage_log_appends_from_many_writers_and_corruption_is_named(small_config, s3_workspace, s3_server):
    ws, bucket, prefix = s3_workspace
    snap = prepare_snapshot(small_config(rows=1500).data, ws, engine="local").snapshot
    for i in range(5):
        SnapshotStore(get_workspace()).find(snap.id).record_usage(run_id=f"r{i}")
    assert [u["run_id"] for u in snap.usage()] == [f"r{i}" for i in range(5)]
    rel = sorted(r for r in snap.manifest["files"] if r.startswith("splits/train/"))[0]
    key = f"{prefix}/datasets/unit/{snap.id}/{rel}"
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(SnapshotCorruptError, match=r"content differs"):
        snap.verify()
    s3_server.client().put_object(Bucket=bucket, Key=f"{prefix}/datasets/unit/{snap.id}/stray.txt", Body=b"x")
    with pytest.raises(SnapshotCorruptError, match=r"extra file stray.txt"):
        snap.verify()


def test_a_publication_without_its_manifest_is_invisible_and_replaced(small_config, s3_workspace, s3_server):
    """On an object store the manifest is written last: a crash mid-publication leaves files but no
    manifest, which readers ignore and the next prepare replaces."""
    ws, bucket, prefix = s3_workspace
    cfg = small_config(rows=1500)
    snap = prepare_snapshot(cfg.data, ws, engine="local").snapshot
    c = s3_server.client()
    c.delete_object(Bucket=bucket, Key=f"{prefix}/datasets/unit/{snap.id}/{MANIFEST}")
    c.put_object(Bucket=bucket, Key=f"{prefix}/datasets/unit/{snap.id}/splits/train/leftover.parquet", Body=b"x")
    c.delete_object(Bucket=bucket, Key=f"{prefix}/{FINGERPRINT_CACHE}")
    store = SnapshotStore(get_workspace())
    assert store.get("unit", snap.id) is None and store.list() == []
    again = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    assert not again.reused and again.snapshot.id == snap.id
    assert again.snapshot.verify().files == len(snap.manifest["files"])  # the leftover is gone


def test_state_store_and_context_follow_the_uri(s3_workspace, s3_server):
    ws, bucket, prefix = s3_workspace
    ctx = Context.create(None)
    assert ctx.state.uri.startswith(f"s3://{bucket}/{prefix}")
    ctx.state.append_record("pipeline/m/history.jsonl", {"status": "succeeded"})
    assert "pipeline/m/history.jsonl" in _keys(s3_server, bucket, prefix)
    assert json.loads(Location.of(f"{ws.uri}/pipeline/m/history.jsonl").read_text())["status"] == "succeeded"
    # A URI workspace has no embedded SQLite store: MLflow needs a server, and the error says so.
    with pytest.raises(ConfigError, match=r"mlflow.tracking_uri"):
        ctx.client  # noqa: B018
    assert ws.ray_storage == f"s3://{bucket}/{prefix}/ray"


def test_bad_workspace_uri_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("MLOPS_RAY_HOME", "nosuchscheme://x/y")
    with pytest.raises(ConfigError, match=r"MLOPS_RAY_HOME=.*not a usable workspace URI"):
        get_workspace()


def test_sample_data_is_generated_into_the_bucket(s3_workspace, s3_server):
    """`{workspace}/raw/...` of a URI workspace is in the bucket: the quickstart's sample data (and
    `mlops-ray data generate --out s3://...`) goes there, readable by every node."""
    from mlops_ray.config import config_from_dict
    from mlops_ray.data.generate import FEATURE_SPEC
    from mlops_ray.data.sources import list_source
    from mlops_ray.pipeline.stages import ensure_sample_data
    from tests._cli_process import run_cli

    ws, bucket, prefix = s3_workspace
    cfg = config_from_dict(
        {
            "data": {
                "name": "gen",
                "source": "{workspace}/raw/gen",
                "id_column": FEATURE_SPEC["id_column"],
                "label_column": FEATURE_SPEC["label_column"],
                "generate": {"rows": 900, "shards": 3},
            }
        }
    )
    uri = ensure_sample_data(Context.create(cfg), cfg)
    assert uri == f"s3://{bucket}/{prefix}/raw/gen"
    assert [k for k in _keys(s3_server, bucket, prefix) if k.startswith("raw/gen/")] == [
        f"raw/gen/part-{i:05d}.parquet" for i in range(3)
    ]
    src = list_source(uri)
    assert sum(pq.ParquetFile(src.filesystem.open_input_file(f)).metadata.num_rows for f in src.files) == 900
    again = run_cli(["data", "generate", "--rows", "10", "--shards", "1", "--out", uri], ws.root)
    assert again.returncode == 2 and "already contains Parquet files" in again.stderr
