"""`data prepare` on the local engine (no Ray): validation, snapshots, reuse, immutability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xxhash

from mlops_ray.config import config_from_dict
from mlops_ray.data.fingerprint import fingerprint_table
from mlops_ray.data.prepare import prepare_snapshot
from mlops_ray.data.snapshot import SnapshotStore
from mlops_ray.errors import DataValidationError, SnapshotNotFoundError
from mlops_ray.workspace import get_workspace


def _independent_split(ids, salt):
    out = []
    for i in ids:
        h = xxhash.xxh64_intdigest(f"{salt}:{i}".encode(), seed=42)
        b = (h - (1 << 64) if h >= 1 << 63 else h) % 10000
        out.append("train" if b < 8000 else "valid" if b < 9000 else "test")
    return out


def test_snapshot_contents(small_config, workspace):
    cfg = small_config()
    res = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    snap = res.snapshot
    assert not res.reused and snap.path.parent.parent == workspace.datasets
    src = pq.read_table(cfg.source(get_workspace().root)).to_pandas()
    expected = dict(zip(src["customer_id"], _independent_split(src["customer_id"], "v1")))
    total = 0
    for split in ("train", "valid", "test"):
        df = pd.concat([pd.read_parquet(f) for f in snap.split_files(split)])
        total += len(df)
        assert all(expected[i] == split for i in df["customer_id"])
        assert snap.manifest["rows_per_split"][split] == len(df)
        assert set(src.columns) == set(df.columns)
    assert total == len(src) == snap.manifest["rows"]
    m = snap.manifest
    assert m["fingerprint"] == fingerprint_table(pq.read_table(cfg.source(get_workspace().root)))
    for key in ("source", "spec", "schema", "created_at", "library_versions", "feature_names"):
        assert key in m
    assert m["spec"]["salt"] == "v1" and m["spec"]["fractions"] == [["train", 0.8], ["valid", 0.1], ["test", 0.1]]
    ref = snap.reference_stats()
    assert set(ref["numeric"]) == set(cfg.data.numeric_features)
    assert ref["numeric"]["income"]["edges"][0] == float("-inf") and ref["numeric"]["income"]["edges"][-1] == float(
        "inf"
    )
    assert ref["numeric"]["income"]["proportions"][-1] > 0  # income has missing values
    assert "__other__" not in ref["categorical"]["region"]["categories"]
    pre = snap.preprocessor()
    x = pre.transform(pd.read_parquet(snap.split_files("valid")[0]))
    assert x.shape[1] == len(m["feature_names"]) and np.isfinite(x).all()


def test_preprocessor_fitted_on_train_only(small_config):
    snap = prepare_snapshot(small_config().data, get_workspace(), engine="local").snapshot
    train = pd.concat(pd.read_parquet(f) for f in snap.split_files("train"))
    everything = pd.concat(pd.read_parquet(f) for s in ("train", "valid", "test") for f in snap.split_files(s))
    p = next(p for p in snap.preprocessor().numeric if p.name == "credit_score")
    assert p.center == pytest.approx(train["credit_score"].mean())
    assert p.center != pytest.approx(everything["credit_score"].mean(), rel=1e-9, abs=0)


def test_same_data_is_reused_and_other_salt_is_a_new_snapshot(small_config):
    cfg = small_config()
    a = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    b = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    assert b.reused and b.snapshot.id == a.snapshot.id
    cfg2 = small_config(split={"salt": "v2"})
    c = prepare_snapshot(cfg2.data, get_workspace(), engine="local")
    assert not c.reused and c.snapshot.id != a.snapshot.id
    assert c.snapshot.manifest["fingerprint"] == a.snapshot.manifest["fingerprint"]
    assert len(SnapshotStore(get_workspace()).list()) == 2


def test_touched_but_identical_source_reuses_snapshot(small_config, tmp_path):
    cfg = small_config()
    a = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    t = pq.read_table(cfg.source(get_workspace().root))
    moved = tmp_path / "reshuffled"
    moved.mkdir()
    perm = np.random.default_rng(0).permutation(t.num_rows)
    for i, chunk in enumerate(np.array_split(perm, 5)):
        pq.write_table(t.take(pa.array(chunk)), moved / f"p{i}.parquet")
    cfg2 = config_from_dict({"data": dict(cfg.data.model_dump(mode="json"), source=str(moved))})
    b = prepare_snapshot(cfg2.data, get_workspace(), engine="local")
    assert b.reused and b.snapshot.id == a.snapshot.id


def test_changed_cell_gives_new_snapshot(small_config, tmp_path):
    cfg = small_config()
    a = prepare_snapshot(cfg.data, get_workspace(), engine="local")
    df = pq.read_table(cfg.source(get_workspace().root)).to_pandas()
    df.loc[17, "age"] += 1
    d = tmp_path / "changed"
    d.mkdir()
    df.to_parquet(d / "x.parquet")
    b = prepare_snapshot(
        config_from_dict({"data": dict(cfg.data.model_dump(mode="json"), source=str(d))}).data,
        get_workspace(),
        engine="local",
    )
    assert b.snapshot.id != a.snapshot.id and b.snapshot.manifest["fingerprint"] != a.snapshot.manifest["fingerprint"]


def _write_bad(tmp_path, mutate):
    from mlops_ray.data.generate import generate_dataset

    d = tmp_path / "bad"
    generate_dataset(tmp_path / "good", 600, shards=1)
    df = pd.read_parquet(tmp_path / "good")
    df = mutate(df)
    d.mkdir()
    df.to_parquet(d / "x.parquet", index=False)
    return d


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda df: df.drop(columns=["income"]), "column 'income' (feature) is missing"),
        (lambda df: df.drop(columns=["label"]), "column 'label' (label_column) is missing"),
        (lambda df: df.assign(customer_id=df["customer_id"].where(df.index != 5, None)), "null ids"),
        (
            lambda df: df.assign(customer_id=df["customer_id"].where(df.index != 7, df["customer_id"][3])),
            "duplicated id",
        ),
        (lambda df: df.assign(label=df["label"].where(df.index != 9, 2)), "binary labels must be 0 or 1"),
        (lambda df: df.assign(age=df["age"].astype(str).where(df.index != 11, "forty")), "not castable to float64"),
        (lambda df: df.assign(age=df["age"].where(df.index != 13, np.inf)), "infinite values"),
    ],
)
def test_bad_sources_fail_with_named_problem_and_leave_nothing(small_config, tmp_path, workspace, mutate, message):
    d = _write_bad(tmp_path, mutate)
    cfg = small_config()
    cfg = config_from_dict({"data": dict(cfg.data.model_dump(mode="json"), source=str(d))})
    with pytest.raises(DataValidationError) as ei:
        prepare_snapshot(cfg.data, get_workspace(), engine="local")
    assert message in str(ei.value)
    leftovers = [p for p in workspace.datasets.rglob("*") if p.is_file()] if workspace.datasets.exists() else []
    assert leftovers == []


def test_bad_value_error_shows_example_rows(small_config, tmp_path):
    d = _write_bad(tmp_path, lambda df: df.assign(label=df["label"].where(df.index != 9, 2)))
    cfg = config_from_dict({"data": dict(small_config().data.model_dump(mode="json"), source=str(d))})
    with pytest.raises(DataValidationError) as ei:
        prepare_snapshot(cfg.data, get_workspace(), engine="local")
    assert "customer_id='c0-0000000009' label=2" in str(ei.value)


def test_csv_source_with_leading_zero_ids(tmp_path, workspace):
    d = tmp_path / "csv"
    d.mkdir()
    (d / "a.csv").write_text(
        "id,x,cat,y\n007,1.5,a,1\n7,2.5,b,0\n0042,,a,1\n"
        + "".join(f"r{i},{i % 7},{'ab'[i % 2]},{i % 2}\n" for i in range(200))
    )
    cfg = config_from_dict({"data": {"name": "csv", "source": str(d), "id_column": "id", "label_column": "y"}})
    snap = prepare_snapshot(cfg.data, get_workspace(), engine="local").snapshot
    assert snap.manifest["rows"] == 203 and snap.manifest["source"]["format"] == "csv"
    ids = pd.concat(pd.read_parquet(f) for s in snap.split_names for f in snap.split_files(s))["id"]
    assert {"007", "7", "0042"} <= set(ids)


def test_store_find_and_errors(small_config):
    snap = prepare_snapshot(small_config().data, get_workspace(), engine="local").snapshot
    store = SnapshotStore(get_workspace())
    assert store.find(snap.id).id == snap.id
    assert store.find(snap.id[:6]).id == snap.id
    assert store.find(f"unit/{snap.id}").id == snap.id
    assert store.find("unit@latest").id == snap.id
    with pytest.raises(SnapshotNotFoundError, match="no snapshot matches"):
        store.find("ffffffff")
    snap.record_usage(run_id="r1", model_version=3)
    assert snap.usage()[0]["run_id"] == "r1"
    # usage is logged beside the snapshot, never into it: the manifest on disk is still the one
    # the snapshot was published with (and plain JSON)
    assert json.loads((snap.path / "manifest.json").read_text()) == json.loads(json.dumps(snap.manifest))
