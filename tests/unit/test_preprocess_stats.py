"""Train statistics, reference bins and the preprocessor (fit on train, reused at serving)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlops_ray.config import CategoricalPreprocessing, NumericPreprocessing
from mlops_ray.data.bins import categorical_bin_counts, numeric_bin_counts
from mlops_ray.data.preprocess import Preprocessor
from mlops_ray.data.stats import TrainStats, batch_stats, quantile_edges, reference_statistics


def _train_table(seed: int, n: int = 4000) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.lognormal(size=n)
    x[rng.random(n) < 0.1] = np.nan
    z = rng.normal(5, 2, n)
    c = rng.choice(["a", "b", "c", "d", "rare"], p=[0.4, 0.3, 0.2, 0.099, 0.001], size=n).astype(object)
    c[rng.random(n) < 0.05] = None
    return pa.table({"x": x, "z": z, "c": pa.array(c.tolist(), pa.string()), "y": rng.integers(0, 2, n)})


def _stats(t: pa.Table, n_batches: int = 3, k: int = 200_000) -> TrainStats:
    keys = np.random.default_rng(99).integers(0, 2**63, t.num_rows).astype(np.uint64)
    parts = [
        batch_stats(t.slice(a[0], len(a)), keys[a[0] : a[0] + len(a)], ("x", "z"), ("c",), "y", k)
        for a in np.array_split(np.arange(t.num_rows), n_batches)
    ]
    total = parts[0]
    for p in parts[1:]:
        total = total.merge(p)
    return total


def test_merged_moments_equal_numpy(seed):
    t = _train_table(seed)
    st = _stats(t)
    x = t.column("x").to_numpy(zero_copy_only=False)
    ok = x[~np.isnan(x)]
    m = st.numeric["x"]
    assert (m.count, m.nulls) == (ok.size, x.size - ok.size)
    assert m.mean == pytest.approx(ok.mean()) and m.std == pytest.approx(ok.std(ddof=1))
    assert (m.min, m.max) == (ok.min(), ok.max())
    assert sum(st.categories["c"].values()) == t.num_rows


def test_reference_deciles_exact_when_sample_holds_all_rows(seed):
    t = _train_table(seed)
    ref = reference_statistics(_stats(t), ("c",), 10)
    x = t.column("x").to_numpy(zero_copy_only=False)
    ok = x[~np.isnan(x)]
    np.testing.assert_allclose(ref["numeric"]["x"]["edges"][1:-1], np.quantile(ok, np.arange(1, 10) / 10))
    props = ref["numeric"]["x"]["proportions"]
    assert len(props) == 11 and props[-1] == pytest.approx(np.isnan(x).mean())
    assert sum(props) == pytest.approx(1.0)
    assert all(p == pytest.approx((1 - props[-1]) / 10, abs=0.002) for p in props[:-1])
    cat = ref["categorical"]["c"]
    assert cat["categories"][:4] == ["a", "b", "c", "d"] and sum(cat["proportions"]) == pytest.approx(1.0)


def test_bottom_k_sample_is_deterministic_and_bounded(seed):
    t = _train_table(seed, 5000)
    a, b = _stats(t, 2, k=1000), _stats(t, 7, k=1000)
    assert len(a.sample_keys) == 1000
    np.testing.assert_array_equal(np.sort(a.sample_keys), np.sort(b.sample_keys))
    np.testing.assert_array_equal(a.sample_column("z"), b.sample_column("z"))


def test_quantile_edges_drop_duplicates():
    e = quantile_edges(np.array([0.0] * 90 + [1.0] * 10), 10)
    assert e[0] == -np.inf and e[-1] == np.inf and len(e) == len(set(e))


def test_bin_counts_conventions():
    edges = [-np.inf, 0.0, 1.0, np.inf]
    np.testing.assert_array_equal(numeric_bin_counts(np.array([-1, 0, 0.5, 1, 2, np.nan]), edges), [1, 2, 2, 1])
    np.testing.assert_array_equal(categorical_bin_counts(["a", "b", "zz", None, "a"], ["a", "b"]), [2, 1, 1, 1])


def _fit(t, **num):
    return Preprocessor.fit(
        _stats(t), ("c",), NumericPreprocessing(**num), CategoricalPreprocessing(max_categories=3, min_frequency=2)
    )


def test_transform_matches_an_independent_pandas_computation(seed):
    t = _train_table(seed)
    pre = _fit(t, impute="mean", scale="standard")
    df = t.to_pandas()
    x = df["x"].fillna(df["x"].mean())
    exp_x = (x - df["x"].mean()) / df["x"].std(ddof=1)
    out = pre.transform(t)
    np.testing.assert_allclose(out[:, 0], exp_x, rtol=1e-5, atol=1e-5)
    # one-hot: top-3 categories, then other, then missing
    assert pre.feature_names[2:] == ["c=a", "c=b", "c=c", "c=__other__", "c=__missing__"]
    cat = df["c"]
    expected = np.column_stack([cat == "a", cat == "b", cat == "c", cat.isin(["d", "rare"]), cat.isna()])
    np.testing.assert_array_equal(out[:, 2:], expected.astype(np.float32))
    assert (out[:, 2:].sum(axis=1) == 1).all()


def test_unseen_categories_and_missing_at_serving_time():
    t = _train_table(0)
    pre = _fit(t)
    serving = pd.DataFrame({"x": [None, 1.0], "z": [5, 6], "c": ["never-seen", None]})
    out = pre.transform(serving)
    names = pre.feature_names
    assert out[0, names.index("c=__other__")] == 1 and out[1, names.index("c=__missing__")] == 1
    med = np.nanmedian(t.column("x").to_numpy(zero_copy_only=False))
    p = pre.numeric[0]
    assert out[0, 0] == pytest.approx((med - p.center) / p.scale, rel=1e-5)


def test_round_trip_through_json_is_exact(tmp_path, seed):
    t = _train_table(seed)
    pre = _fit(t, add_missing_indicator=True, scale="minmax")
    pre.save(tmp_path / "p.json")
    again = Preprocessor.load(tmp_path / "p.json")
    json.loads((tmp_path / "p.json").read_text())
    np.testing.assert_array_equal(pre.transform(t), again.transform(t))
    assert again.feature_names == pre.feature_names


def test_ordinal_encoding_codes():
    t = _train_table(1)
    pre = Preprocessor.fit(
        _stats(t), ("c",), NumericPreprocessing(), CategoricalPreprocessing(encoding="ordinal", max_categories=2)
    )
    out = pre.transform(pd.DataFrame({"x": [1.0] * 4, "z": [1.0] * 4, "c": ["a", "b", "zzz", None]}))
    assert out[:3, -1].tolist() == [0.0, 1.0, 2.0] and np.isnan(out[3, -1])


def test_exact_sum_is_exact_and_order_independent(seed):
    from fractions import Fraction

    from mlops_ray.data.stats import exact_sum

    rng = np.random.default_rng(seed)
    v = np.concatenate([rng.normal(size=1000) * 10.0 ** rng.integers(-8, 8, 1000), [1e300, -1e300, 5e-324, 0.0, -0.0]])
    expected = sum(Fraction(x) for x in v.tolist())
    assert Fraction(exact_sum(v), 1 << 1127) == expected
    parts = np.array_split(rng.permutation(v), 7)
    assert sum(exact_sum(p) for p in parts) == exact_sum(v)


def test_moments_identical_for_any_batching(seed):
    t = _train_table(seed)
    a, b = _stats(t, 1), _stats(t, 9)
    for name in ("x", "z"):
        assert a.numeric[name] == b.numeric[name]
        assert a.numeric[name].mean == b.numeric[name].mean and a.numeric[name].std == b.numeric[name].std
