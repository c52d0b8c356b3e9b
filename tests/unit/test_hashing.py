"""The hash-split contract: Spark-equivalent buckets, boundaries, stability."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from mlops_ray.data.hashing import (
    NUM_BUCKETS,
    assign_split_names,
    assign_splits,
    hash_buckets,
    hash_ids,
    split_boundaries,
)

REFERENCE = json.loads((Path(__file__).parent / "data" / "spark_xxhash64_reference.json").read_text("utf-8"))
FR = {"train": 0.8, "valid": 0.1, "test": 0.1}


def _python_bucket(salt: str, id_) -> int:
    """Independent one-line statement of the rule with the xxhash package."""
    h = xxhash.xxh64_intdigest(f"{salt}:{id_}".encode("utf-8"), seed=42)
    signed = h - (1 << 64) if h >= (1 << 63) else h
    return signed % 10000


@pytest.mark.parametrize("row", REFERENCE["rows"], ids=lambda r: f"{r['salt']}:{r['id']}"[:30])
def test_bucket_equals_spark_pmod_xxhash64(row):
    ids = pa.array([row["id"]], type=pa.int64() if row["id_type"] == "bigint" else pa.string())
    assert int(hash_ids(ids, row["salt"])[0]) == row["xxhash64"]
    assert int(hash_buckets(ids, row["salt"])[0]) == row["bucket"]


def test_reference_file_has_negative_hashes_so_pmod_is_exercised():
    assert sum(r["xxhash64"] < 0 for r in REFERENCE["rows"]) >= 5


def test_buckets_match_independent_python_rule(seed):
    rng = np.random.default_rng(seed)
    ids = [f"id-{x}" for x in rng.integers(0, 10**12, 5000)] + ["", "é", "日本"]
    got = hash_buckets(pa.array(ids), "salt")
    assert got.tolist() == [_python_bucket("salt", i) for i in ids]
    assert got.min() >= 0 and got.max() < NUM_BUCKETS


def test_integer_ids_hash_like_their_decimal_string():
    ints = pa.array([0, 7, -5, 123456789012], pa.int64())
    strs = pa.array(["0", "7", "-5", "123456789012"])
    np.testing.assert_array_equal(hash_ids(ints, "v1"), hash_ids(strs, "v1"))


@pytest.mark.parametrize("bad", [pa.array([1.5, 2.0]), pa.array(["a", None])])
def test_float_or_null_ids_are_rejected(bad):
    with pytest.raises(ValueError):
        hash_ids(bad, "v1")


def test_boundaries_follow_cumulative_rounding():
    assert split_boundaries(FR) == [("train", 0, 8000), ("valid", 8000, 9000), ("test", 9000, 10000)]
    assert split_boundaries({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == [
        ("a", 0, 3333),
        ("b", 3333, 6667),
        ("c", 6667, 10000),
    ]
    assert split_boundaries({"all": 1.0}) == [("all", 0, 10000)]


@pytest.mark.parametrize(
    "fractions,message",
    [
        ({"train": 0.8, "valid": 0.1}, "sum to 1"),
        ({"train": 0.9, "valid": 0.2, "test": -0.1}, "positive"),
        ({"train": 1.0, "valid": 0.0}, "positive"),
        ({}, "at least one"),
        ({"train": float("nan")}, "positive"),
        ({"train": 0.99995, "tiny": 0.00005}, "too small"),
    ],
)
def test_bad_fractions_give_clear_errors(fractions, message):
    with pytest.raises(ValueError, match=message):
        split_boundaries(fractions)


def test_sum_tolerance_is_1e9():
    split_boundaries({"a": 0.7, "b": 0.2, "c": 0.1 + 5e-10})
    with pytest.raises(ValueError):
        split_boundaries({"a": 0.7, "b": 0.2, "c": 0.1 + 5e-9})


def test_split_codes_follow_bucket_ranges(seed):
    ids = pa.array([f"u{i}" for i in np.random.default_rng(seed).permutation(20000)])
    b = hash_buckets(ids, "s")
    names = assign_split_names(ids, "s", FR)
    expected = np.where(b < 8000, "train", np.where(b < 9000, "valid", "test"))
    assert (names == expected).all()


def test_split_is_independent_of_batching_and_order(seed):
    rng = np.random.default_rng(seed)
    ids = np.array([f"cust-{i:08d}" for i in range(30000)])
    full = dict(zip(ids, assign_splits(pa.array(ids), "v1", FR)))
    perm = rng.permutation(len(ids))
    for n_blocks in (1, 3, 17):
        for block in np.array_split(ids[perm], n_blocks):
            codes = assign_splits(pa.array(block), "v1", FR)
            assert all(full[i] == c for i, c in zip(block, codes))


def test_fractions_are_respected_statistically():
    ids = pa.array([f"r{i}" for i in range(200_000)])
    counts = np.bincount(assign_splits(ids, "v1", FR), minlength=3) / 200_000
    np.testing.assert_allclose(counts, [0.8, 0.1, 0.1], atol=0.005)


def test_other_salt_reshuffles():
    ids = pa.array([f"r{i}" for i in range(5000)])
    a, b = assign_splits(ids, "v1", FR), assign_splits(ids, "v2", FR)
    assert 0.2 < (a != b).mean() < 0.5


_CHILD = """
import sys, pyarrow as pa
from mlops_ray.data.hashing import assign_splits
ids = pa.array([f"id{i}" for i in range(2000)] + ["é", "日本"])
sys.stdout.write(",".join(map(str, assign_splits(ids, "salt", {"a": 0.5, "b": 0.3, "c": 0.2}).tolist())))
"""


def test_split_is_identical_across_processes_with_different_hashseed():
    outs = set()
    for hs in ("0", "1", "random"):
        env = dict(os.environ, PYTHONHASHSEED=hs)
        outs.add(
            subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True).stdout
        )
    assert len(outs) == 1


def test_cv_folds_follow_the_hash_rule_with_fold_salt():
    from mlops_ray.train.cv import assign_folds, summarize_folds

    ids = pa.array([f"r{i}" for i in range(30000)])
    folds = assign_folds(ids, "v1", 5)
    b = hash_buckets(ids, "v1:fold")
    np.testing.assert_array_equal(folds, b // 2000)
    np.testing.assert_allclose(np.bincount(folds) / 30000, [0.2] * 5, atol=0.01)
    # independent of the split assignment
    split = assign_splits(ids, "v1", FR)
    assert abs(np.corrcoef(folds, split)[0, 1]) < 0.05
    s = summarize_folds([{"auc": 0.8}, {"auc": 0.9}])
    assert s["cv_auc_mean"] == pytest.approx(0.85) and s["cv_auc_std"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        assign_folds(ids, "v1", 1)
