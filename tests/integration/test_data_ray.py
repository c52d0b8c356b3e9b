"""Data stage on a real local Ray: Ray Data path equals the local path, for any block layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_ray.config import config_from_dict
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.split_files import fingerprint_source, split_source
from mlops_ray.errors import DataValidationError
from mlops_ray.workspace import get_workspace

pytestmark = pytest.mark.integration


def _membership(snap) -> dict[str, str]:
    out = {}
    for split in snap.split_names:
        for f in snap.split_files(split):
            for i in pq.read_table(f, columns=["customer_id"]).column(0).to_pylist():
                out[i] = split
    return out


def test_ray_prepare_equals_local_prepare(ray_session, small_config, tmp_path, monkeypatch):
    cfg = small_config(rows=6000, shards=4)
    ray_res = prepare_snapshot(cfg.data, get_workspace(), engine="ray")
    monkeypatch.setenv("MLOPS_RAY_HOME", str(tmp_path / "ws-local"))
    local_res = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    a, b = ray_res.snapshot, local_res.snapshot
    assert a.id == b.id and a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert a.manifest["rows_per_split"] == b.manifest["rows_per_split"]
    assert _membership(a) == _membership(b)
    assert a.preprocessor().to_dict() == b.preprocessor().to_dict()
    assert a.reference_stats() == b.reference_stats()


def test_split_membership_independent_of_blocks_and_shards(ray_session, tmp_path):
    from mlops_ray.data.generate import generate_dataset

    generate_dataset(tmp_path / "s1", 5000, shards=1)
    t = pq.read_table(tmp_path / "s1")
    perm = np.random.default_rng(3).permutation(t.num_rows)
    (tmp_path / "s7").mkdir()
    for i, chunk in enumerate(np.array_split(perm, 7)):
        pq.write_table(t.take(pa.array(chunk)), tmp_path / "s7" / f"part-{i}.parquet")
    fr = {"train": 0.6, "valid": 0.2, "test": 0.2}
    results = []
    for src, bs, engine in [("s1", 5000, "ray"), ("s1", 97, "ray"), ("s7", 1024, "ray"), ("s7", 333, "local")]:
        out = tmp_path / f"out-{src}-{bs}-{engine}"
        counts = split_source(str(tmp_path / src), "customer_id", fr, "salt", str(out), engine=engine, batch_size=bs)
        member = {}
        for split in fr:
            for i in pq.read_table(out / split, columns=["customer_id"]).column(0).to_pylist():
                assert i not in member
                member[i] = split
        assert sum(counts.values()) == len(member) == 5000
        results.append(member)
    assert all(r == results[0] for r in results[1:])


def test_ray_fingerprint_equals_local(ray_session, small_config):
    cfg = small_config(rows=4000, shards=3)
    assert fingerprint_source(cfg.source(get_workspace().root), engine="ray", batch_size=500) == fingerprint_source(
        cfg.source(get_workspace().root)
    )


def test_ray_validation_failure_leaves_no_snapshot(ray_session, small_config, tmp_path, workspace):
    cfg = small_config(rows=2000, shards=2)
    df = pd.read_parquet(cfg.source(get_workspace().root))
    df.loc[100, "label"] = 5
    (tmp_path / "bad").mkdir()
    df.to_parquet(tmp_path / "bad" / "x.parquet")
    bad = config_from_dict({"data": dict(cfg.data.model_dump(mode="json"), source=str(tmp_path / "bad"))})
    with pytest.raises(DataValidationError, match="binary labels must be 0 or 1"):
        prepare_snapshot(bad.data, get_workspace(), engine="ray")
    assert not [p for p in workspace.datasets.rglob("*") if p.is_file()]


def test_transform_dataset_feeds_features(ray_session, small_config):
    from mlops_ray.data.ray_io import transform_dataset

    snap = prepare_snapshot(small_config(rows=3000).data, get_workspace(), engine="ray").snapshot
    pre = snap.preprocessor()
    ds = transform_dataset(snap, "valid", pre)
    df = ds.to_pandas()
    assert len(df) == snap.manifest["rows_per_split"]["valid"]
    assert set(pre.feature_names) <= set(df.columns)
    raw = pd.concat(pd.read_parquet(f) for f in snap.split_files("valid")).set_index("customer_id")
    df = df.set_index("customer_id").loc[raw.index]
    np.testing.assert_allclose(
        df[pre.feature_names].to_numpy(dtype=np.float32), pre.transform(raw.reset_index()), rtol=1e-6
    )
