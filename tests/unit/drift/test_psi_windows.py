"""PSI, chance thresholds, reference counting and offline compare (pure; no Ray)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _drift_data import LIMITS, make_stats, sample
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_ray.drift import psi as P
from mlops_ray.drift.offline import compare, count_source
from mlops_ray.drift.reference import PREDICTION, DriftReference, evaluate, merge_counts
from mlops_ray.errors import SchemaError
from mlops_ray.model.prediction import prediction_reference


# ----------------------------------------------------------------------------------- psi
def test_psi_by_hand_and_identity():
    ref = np.array([0.5, 0.5])
    cur = np.array([0.25, 0.75])
    want = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert P.psi(ref, cur) == pytest.approx(want, rel=1e-12)
    assert P.psi(ref, ref) == 0.0
    assert P.psi([10, 30], [1, 3]) == pytest.approx(0.0, abs=1e-15)  # counts or proportions alike


def test_epsilon_floor_renormalised():
    ref = np.array([0.0, 0.5, 0.5])
    cur = np.array([0.2, 0.4, 0.4])
    r = np.array([P.EPSILON, 0.5, 0.5])
    r /= r.sum()
    want = float(np.sum((cur - r) * np.log(cur / r)))
    assert P.psi(ref, cur) == pytest.approx(want, rel=1e-12)
    assert np.isfinite(P.psi([1, 0], [0, 1]))
    # counts: an empty bin is floored at half a row of the sample, then renormalised
    cur_counts = np.array([0, 40, 60])
    c = np.array([0.5 / 100, 0.4, 0.6])
    c /= c.sum()
    want = float(np.sum((c - r) * np.log(c / r)))
    assert P.psi(ref, cur_counts) == pytest.approx(want, rel=1e-12)
    assert P.floor_for(np.array([1, 2, 3, 4])) == 0.05 and P.floor_for(np.array([0.5, 0.5])) == P.EPSILON
    with pytest.raises(ValueError, match="bins differ"):
        P.psi([0.5, 0.5], [1.0])


@given(st.lists(st.floats(0, 1), min_size=2, max_size=12), st.lists(st.floats(0, 1), min_size=2, max_size=12))
@settings(max_examples=200, deadline=None)
def test_psi_nonnegative(a, b):
    k = min(len(a), len(b))
    a, b = np.array(a[:k]) + 1e-9, np.array(b[:k]) + 1e-9
    assert P.psi(a, b) >= -1e-12


def test_sparse_categories_stay_within_their_chance_threshold():
    """~100 Zipf categories, windows of 1,000 rows, no drift: the empty-bin floor must not push PSI
    past the chance threshold much more often than alpha (a 1e-4 floor did so in ~5% of windows)."""
    rng = np.random.default_rng(11)
    ref = 1.0 / np.arange(1, 101) ** 1.1
    ref /= ref.sum()
    thr = P.chance_threshold(1_000_000, 1000, 100, 0.01)
    draws = rng.multinomial(1000, ref, size=2000)
    rate = float(np.mean([P.psi(ref, d) > thr for d in draws]))
    assert rate <= 0.02, rate


def test_chance_threshold_matches_no_drift_simulation():
    """Under no drift, PSI exceeds the alpha threshold about alpha of the time (and its mean is
    about (1/n_ref + 1/n)(B-1), the formula the threshold is built on)."""
    rng = np.random.default_rng(7)
    ref = np.full(10, 0.1)
    n, n_ref, alpha, sims = 500, 1_000_000, 0.05, 3000
    draws = rng.multinomial(n, ref, size=sims)
    values = np.array([P.psi(ref, d) for d in draws])
    thr = P.chance_threshold(n_ref, n, 10, alpha)
    rate = float((values > thr).mean())
    assert 0.02 <= rate <= 0.08, rate
    assert values.mean() == pytest.approx((1 / n + 1 / n_ref) * 9, rel=0.15)
    # Bonferroni: more features -> a higher threshold; smaller windows -> a higher threshold
    assert P.chance_threshold(n_ref, n, 10, alpha, n_tests=10) > thr
    assert P.chance_threshold(n_ref, 100, 10, alpha) > thr
    # 10 bins, 100 rows: the no-drift PSI is ~0.09 on average and often above the 0.1 rule
    assert P.chance_threshold(n_ref, 100, 10, 0.01) > 0.1
    assert P.chance_threshold(n_ref, 0, 10, 0.01) == math.inf


def test_verdict_needs_band_and_chance_and_rows():
    kw = {"psi_warn": 0.1, "psi_alert": 0.25, "min_rows": 500}
    assert P.verdict(0.3, 0.05, 1000, **kw) == P.ALERT
    assert P.verdict(0.15, 0.05, 1000, **kw) == P.WARN
    assert P.verdict(0.3, 0.4, 1000, **kw) == P.OK  # within what chance gives at this size
    assert P.verdict(0.3, 0.05, 499, **kw) == P.INSUFFICIENT
    assert P.verdict(0.05, 0.01, 1000, **kw) == P.OK
    assert P.worst([P.OK, P.ALERT, P.WARN]) == P.ALERT
    assert P.worst([]) == P.INSUFFICIENT


def test_statuses_are_an_enum_that_serialises_as_before():
    """``DriftStatus`` members are the old strings: equal to them, hashed as them, and written
    byte-for-byte as them (JSON, orjson, checkpoints, the text report, Prometheus' severity)."""
    import json
    import pickle

    import orjson

    from mlops_ray.drift.render import format_json

    assert [m.value for m in P.DriftStatus] == ["ok", "warn", "alert", "insufficient"]
    assert (P.OK, P.WARN, P.ALERT, P.INSUFFICIENT) == tuple(P.DriftStatus)
    assert all(isinstance(m, str) and m == m.value and f"{m}" == str(m) == m.value for m in P.DriftStatus)
    kw = {"psi_warn": 0.1, "psi_alert": 0.25, "min_rows": 500}
    assert type(P.verdict(0.3, 0.05, 1000, **kw)) is P.DriftStatus
    assert type(P.fixed_status(0.0, 0.1, 0.25)) is P.DriftStatus
    assert P.worst(["ok", "alert"]) is P.ALERT  # plain strings read back from a checkpoint
    assert P.worst([]) is P.INSUFFICIENT
    assert P.SEVERITY["warn"] == P.SEVERITY[P.WARN] == 1 and P.DriftStatus("alert") is P.ALERT
    assert pickle.loads(pickle.dumps(P.ALERT)) is P.ALERT

    rng = np.random.default_rng(1)
    ref = DriftReference.from_stats(make_stats())
    ev = evaluate(ref, ref.count(sample(rng, 2000, shift=10, cat_p=(0.1, 0.2, 0.7))), **LIMITS)
    assert type(ev["status"]) is P.DriftStatus and all(type(f["status"]) is P.DriftStatus for f in ev["features"])

    def plain(obj):  # the same evaluation as it was before: every status a str
        if isinstance(obj, dict):
            return {k: plain(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [plain(v) for v in obj]
        return str(obj) if isinstance(obj, P.DriftStatus) else obj

    old = plain(ev)
    assert type(old["status"]) is str
    assert json.dumps(ev) == json.dumps(old)
    assert orjson.dumps(ev, option=orjson.OPT_SERIALIZE_NUMPY) == orjson.dumps(old, option=orjson.OPT_SERIALIZE_NUMPY)
    assert format_json(ev) == format_json(old)


# ----------------------------------------------------------------------------------- counting
def test_reference_counts_bins_and_missing():
    ref = DriftReference.from_stats(make_stats())
    t = pa.table({"x": pa.array([None, -1e9, 1e9, 50.0]), "c": pa.array(["a", None, "zzz", "b"])})
    counts = ref.count(t)
    assert counts["x"].sum() == 4 and counts["x"][-1] == 1 and counts["x"][0] == 1 and counts["x"][-2] == 1
    assert counts["c"].tolist() == [1, 1, 0, 1, 1]  # a, b, c, other, missing
    assert ref.features[0].bins[0].startswith("(-inf") and ref.features[0].bins[-1] == "__missing__"
    # numeric text (CSV) is parsed; a stray string counts as missing
    s = ref.count(pa.table({"x": pa.array(["50", "oops"]), "c": pa.array(["a", "a"])}))
    assert s["x"][-1] == 1 and s["x"].sum() == 2


@given(st.lists(st.integers(1, 60), min_size=1, max_size=8), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_counts_merge_in_any_chunking(sizes, seed):
    rng = np.random.default_rng(seed)
    ref = DriftReference.from_stats(make_stats())
    t = sample(rng, sum(sizes), shift=3)
    whole = ref.count(t)
    merged: dict = {}
    start = 0
    for n in sizes:
        merge_counts(merged, ref.count(t.slice(start, n)))
        start += n
    assert all(np.array_equal(whole[k], merged[k]) for k in whole)


def test_evaluate_detects_shift_and_not_noise():
    rng = np.random.default_rng(1)
    ref = DriftReference.from_stats(make_stats())
    same = evaluate(ref, ref.count(sample(rng, 2000)), **LIMITS)
    assert same["status"] == "ok" and all(f["psi"] < 0.05 for f in same["features"])
    shifted = evaluate(ref, ref.count(sample(rng, 2000, shift=10, cat_p=(0.1, 0.2, 0.7))), **LIMITS)
    assert shifted["status"] == "alert"
    assert {f["feature"] for f in shifted["features"] if f["status"] == "alert"} == {"x", "c"}
    assert shifted["features"][0]["psi"] >= shifted["features"][1]["psi"]
    small = evaluate(ref, ref.count(sample(rng, 100, shift=10)), **LIMITS)
    assert small["status"] == "insufficient"
    assert all(len(f["bins"]) == len(f["reference"]) == len(f["current"]) for f in shifted["features"])


def test_prediction_reference_and_histogram():
    rng = np.random.default_rng(2)
    scores = rng.uniform(size=5000)
    entry = prediction_reference("binary", scores)
    assert entry["kind"] == "numeric" and len(entry["edges"]) == 11 and sum(entry["proportions"]) == pytest.approx(1)
    stats = {**make_stats(), "prediction": entry, "task": "binary"}
    ref = DriftReference.from_stats(stats)
    t = sample(rng, 1000)
    ev = evaluate(ref, ref.count(t, rng.uniform(size=1000) ** 3), **LIMITS)
    assert ev["prediction"]["feature"] == PREDICTION and ev["prediction"]["status"] == "alert"
    multi = prediction_reference("multiclass", rng.dirichlet([1, 1, 1], size=300))
    assert multi["kind"] == "categorical" and multi["categories"] == ["0", "1", "2"]


# ----------------------------------------------------------------------------------- offline
def test_offline_compare_streams_files_and_equals_in_memory(tmp_path):
    rng = np.random.default_rng(5)
    ref = DriftReference.from_stats(make_stats())
    parts = [sample(rng, 700, shift=4) for _ in range(3)]
    for i, t in enumerate(parts):
        pq.write_table(t, tmp_path / f"part-{i}.parquet")
    counts, rows = count_source(ref, str(tmp_path), batch_size=200)
    assert rows == 2100
    whole = ref.count(pa.concat_tables(parts))
    assert all(np.array_equal(counts[k], whole[k]) for k in whole)
    ev = compare(ref, str(tmp_path), LIMITS)
    mem = evaluate(ref, whole, **LIMITS)
    assert [f["psi"] for f in ev["features"]] == [f["psi"] for f in mem["features"]]
    pq.write_table(pa.table({"x": [1.0]}), tmp_path / "only_x.parquet")
    with pytest.raises(SchemaError, match="'c'"):
        count_source(ref, str(tmp_path / "only_x.parquet"))
