"""Unit tests for the synthetic dataset generator (no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_ray.data import generate as gen
from mlops_ray.data.generate import FEATURE_SPEC, generate_dataset

NUMERIC = FEATURE_SPEC["numeric"]
CATEGORICAL = FEATURE_SPEC["categorical"]


def _read(paths) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in paths])


def _bytes(paths) -> list[bytes]:
    return [p.read_bytes() for p in paths]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """30k rows, seed 7, no drift, as (paths, DataFrame)."""
    paths = generate_dataset(tmp_path_factory.mktemp("base"), 30_000, shards=3, seed=7)
    return paths, _read(paths).to_pandas()


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """Same as ``base`` but drift=1."""
    paths = generate_dataset(tmp_path_factory.mktemp("drift"), 30_000, shards=3, seed=7, drift=1.0)
    return paths, _read(paths).to_pandas()


# --------------------------------------------------------------------------- layout


def test_row_and_shard_counts(tmp_path):
    paths = generate_dataset(tmp_path, 10_003, shards=4, seed=1)
    assert [p.name for p in paths] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert sorted(tmp_path.iterdir()) == paths  # no temp files left behind
    # as even as possible, first shards take the remainder
    assert [pq.ParquetFile(p).metadata.num_rows for p in paths] == [2501, 2501, 2501, 2500]


def test_ids_unique_formatted_and_contiguous(base):
    _, df = base
    ids = df["customer_id"]
    assert ids.is_unique
    assert ids.iloc[0] == "c7-0000000000"
    assert ids.iloc[-1] == "c7-0000029999"
    assert ids.str.fullmatch(r"c7-\d{10}").all()


def test_schema_and_dtypes(base):
    paths, df = base
    schema = pq.read_schema(paths[0])
    expected = (
        [FEATURE_SPEC["id_column"], FEATURE_SPEC["timestamp_column"]]
        + NUMERIC
        + CATEGORICAL
        + [FEATURE_SPEC["label_column"]]
    )
    assert schema.names == expected
    assert len(NUMERIC) >= 9 and len(CATEGORICAL) >= 4
    assert schema.field("customer_id").type == pa.string()
    assert schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    for name in NUMERIC:
        assert schema.field(name).type == pa.float64(), name
    for name in CATEGORICAL:
        assert schema.field(name).type == pa.string(), name
    assert schema.field("label").type == pa.int64()
    assert set(df["label"].unique()) == {0, 1}


# --------------------------------------------------------------------------- determinism


def test_same_arguments_give_byte_identical_files(tmp_path, base):
    paths, _ = base
    again = generate_dataset(tmp_path, 30_000, shards=3, seed=7)
    assert _bytes(again) == _bytes(paths)


def test_drift_zero_is_the_default(tmp_path, base):
    paths, _ = base
    again = generate_dataset(tmp_path, 30_000, shards=3, seed=7, drift=0)
    assert _bytes(again) == _bytes(paths)


def test_chunk_rows_does_not_change_bytes(tmp_path):
    rows = 300_000  # > 2 row groups, several blocks; chunks straddle both
    calls: list[int] = []
    small = generate_dataset(tmp_path / "small", rows, shards=1, seed=3, chunk_rows=77_777, progress=calls.append)
    big = generate_dataset(tmp_path / "big", rows, shards=1, seed=3, chunk_rows=rows)
    assert _bytes(small) == _bytes(big)
    assert calls == [77_777, 77_777, 77_777, rows - 3 * 77_777]
    meta = pq.ParquetFile(small[0]).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [gen.ROW_GROUP_ROWS, gen.ROW_GROUP_ROWS, rows - 2 * gen.ROW_GROUP_ROWS]


def test_shards_only_partition_the_same_rows(tmp_path):
    one = _read(generate_dataset(tmp_path / "one", 10_001, shards=1, seed=5))
    calls: list[int] = []
    five = _read(generate_dataset(tmp_path / "five", 10_001, shards=5, seed=5, chunk_rows=999, progress=calls.append))
    assert one.equals(five)
    assert sum(calls) == 10_001


def test_smaller_rows_is_a_prefix(tmp_path):
    small = _read(generate_dataset(tmp_path / "s", 1_000, shards=1, seed=5))
    large = _read(generate_dataset(tmp_path / "l", 70_000, shards=2, seed=5))
    assert small.equals(large.slice(0, 1_000))


def test_different_seeds_differ_and_ids_are_disjoint(tmp_path, base):
    _, df7 = base
    df8 = _read(generate_dataset(tmp_path, 30_000, shards=3, seed=8)).to_pandas()
    assert not set(df7["customer_id"]) & set(df8["customer_id"])
    assert not np.array_equal(df7["income"].to_numpy(), df8["income"].to_numpy())
    assert (df7["label"].to_numpy() != df8["label"].to_numpy()).any()


# --------------------------------------------------------------------------- values


def test_missing_values_only_where_promised(base):
    _, df = base
    rates = df.isna().mean()
    assert 0.02 < rates["income"] < 0.04
    assert 0.04 < rates["days_since_login"] < 0.06
    assert 0.03 < rates["device"] < 0.05
    others = [c for c in df.columns if c not in ("income", "days_since_login", "device")]
    assert rates[others].eq(0).all(), rates[others][rates[others] > 0]


def test_value_bounds_and_shapes(base):
    _, df = base
    age = df["age"]
    assert age.between(18, 95).all() and (age == np.round(age)).all()
    credit = df["credit_score"]
    assert credit.between(300, 850).all() and (credit == np.round(credit)).all()
    assert df["utilization"].between(0, 1).all()
    tenure = df["tenure_months"]
    assert tenure.between(0, 240).all() and (tenure == np.round(tenure)).all()
    tx = df["num_transactions"]
    assert (tx >= 0).all() and (tx == np.round(tx)).all()
    assert (df["days_since_login"].dropna() >= 0).all()
    assert (df["session_minutes"] > 0).all()
    assert (df["account_balance"] < 0).any() and (df["account_balance"] > 0).any()
    income = df["income"].dropna()
    assert (income > 0).all() and income.mean() > 1.1 * income.median()  # right-skewed
    times = df["event_time"]
    assert times.min() >= pd.Timestamp("2024-01-01", tz="UTC")
    assert times.max() < pd.Timestamp("2025-01-01", tz="UTC")
    assert times.max() - times.min() > pd.Timedelta(days=300)


def test_categorical_levels(base):
    _, df = base
    assert set(df["region"]) == set(gen._REGIONS) and len(gen._REGIONS) == 8
    assert set(df["device"].dropna()) == {"android", "ios", "web", "tablet"}
    assert set(df["plan"]) == {"free", "basic", "standard", "premium"}
    merchants = df["merchant_category"].value_counts(normalize=True)
    assert 200 < len(merchants) <= 300
    assert merchants.iloc[0] > 0.1 and merchants.iloc[0] > 10 * merchants.iloc[50]  # Zipf-like


# --------------------------------------------------------------------------- label


def test_label_base_rate(base):
    _, df = base
    assert 0.15 < df["label"].mean() < 0.35


def test_label_is_learnable(base):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    _, df = base
    X = df[NUMERIC + CATEGORICAL].copy()
    for name in CATEGORICAL:
        X[name] = X[name].astype("category").cat.codes  # -1 for missing
    y = df["label"].to_numpy()
    train, test = slice(0, 20_000), slice(20_000, None)
    model = HistGradientBoostingClassifier(max_iter=150, random_state=0).fit(X[train], y[train])
    auc = roc_auc_score(y[test], model.predict_proba(X[test])[:, 1])
    assert 0.75 < auc < 0.95, auc


def test_label_has_nonlinear_effects(base):
    _, df = base
    rate = df["label"].mean()
    risky = (df["utilization"] > 0.6) & (df["tenure_months"] < 18)
    assert df.loc[risky, "label"].mean() > 2 * rate  # interaction
    young, middle, old = df["age"] < 25, df["age"].between(40, 55), df["age"] > 75
    assert df.loc[young, "label"].mean() > df.loc[middle, "label"].mean()  # U-shape
    assert df.loc[old, "label"].mean() > df.loc[middle, "label"].mean()


# --------------------------------------------------------------------------- drift


def test_drift_keeps_customers_and_shifts_features(base, drifted):
    _, d0 = base
    _, d1 = drifted
    for name in ["customer_id", "age", "tenure_months", "account_balance", "num_transactions"]:
        pd.testing.assert_series_equal(d0[name], d1[name])
    assert d1["income"].mean() < 0.85 * d0["income"].mean()
    assert d1["utilization"].mean() > d0["utilization"].mean() + 0.1
    assert d1["credit_score"].mean() < d0["credit_score"].mean() - 20
    assert d1["session_minutes"].mean() > 1.3 * d0["session_minutes"].mean()
    assert d1["event_time"].min() > d0["event_time"].max() - pd.Timedelta(days=2)
    assert d1["label"].mean() > d0["label"].mean() + 0.05


def test_drift_introduces_unseen_categories(base, drifted):
    _, d0 = base
    _, d1 = drifted
    new_regions = set(d1["region"]) - set(d0["region"])
    new_merchants = set(d1["merchant_category"]) - set(d0["merchant_category"])
    assert new_regions == {"region_X", "region_Y"}
    assert len(new_merchants) >= 10 and all(m.startswith("mcc_new_") for m in new_merchants)
    assert 0.05 < d1["region"].isin(new_regions).mean() < 0.15
    assert not d0["merchant_category"].str.startswith("mcc_new_").any()


def test_partial_drift_is_in_between(tmp_path, base, drifted):
    half = _read(generate_dataset(tmp_path, 30_000, shards=3, seed=7, drift=0.5)).to_pandas()
    means = [df["utilization"].mean() for df in (base[1], half, drifted[1])]
    assert means[0] < means[1] < means[2]
    assert 0 < half["region"].isin(["region_X", "region_Y"]).mean() < 0.08


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"rows": 0}, "rows"),
        ({"rows": 2.5}, "rows"),
        ({"rows": True}, "rows"),
        ({"rows": gen.MAX_ROWS + 1}, "rows"),
        ({"shards": 0}, "shards"),
        ({"rows": 3, "shards": 4}, "shards"),
        ({"seed": -1}, "seed"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"drift": -0.1}, "drift"),
        ({"drift": 1.5}, "drift"),
        ({"drift": math.nan}, "drift"),
        ({"drift": "0.5"}, "drift"),
        ({"progress": 5}, "progress"),
    ],
)
def test_invalid_arguments_raise_value_error(tmp_path, kwargs, name):
    args = {"rows": 100, **kwargs}
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"^{name} "):
        generate_dataset(out, **args)
    assert not out.exists()


def test_refuses_stale_shards_from_a_larger_run(tmp_path):
    generate_dataset(tmp_path, 100, shards=4)
    with pytest.raises(ValueError, match="part-00002.parquet, part-00003.parquet"):
        generate_dataset(tmp_path, 100, shards=2)
    # rerunning with the same or more shards overwrites in place
    assert len(generate_dataset(tmp_path, 100, shards=4, seed=1)) == 4
