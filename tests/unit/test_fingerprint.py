"""Fingerprint: invariant to order/sharding/layout, sensitive to any single cell."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_ray.data.fingerprint import FingerprintPartial, fingerprint_partial, fingerprint_table
from mlops_ray.data.split_files import fingerprint_source


def _table(seed: int, n: int = 500) -> pa.Table:
    rng = np.random.default_rng(seed)
    f = rng.normal(size=n)
    f[::17] = np.nan
    cat = rng.choice(["a", "b", "c", None], size=n)
    return pa.table(
        {
            "id": pa.array([f"id{i}" for i in range(n)]),
            "x": pa.array(f, from_pandas=False),
            "k": pa.array(rng.integers(-5, 5, n), pa.int64()),
            "cat": pa.array(cat.tolist(), pa.string()),
            "ts": pa.array(rng.integers(0, 10**15, n), pa.timestamp("us", tz="UTC")),
            "flag": pa.array(rng.random(n) < 0.5),
        }
    )


def test_row_order_does_not_matter(seed):
    t = _table(seed)
    perm = np.random.default_rng(seed + 1).permutation(t.num_rows)
    assert fingerprint_table(t) == fingerprint_table(t.take(pa.array(perm)))


def test_column_order_does_not_matter(seed):
    t = _table(seed)
    assert fingerprint_table(t) == fingerprint_table(t.select(list(reversed(t.column_names))))


def test_partials_merge_to_the_whole(seed):
    t = _table(seed)
    parts = [fingerprint_partial(t.slice(a, b - a)) for a, b in [(0, 100), (100, 101), (101, 333), (333, 500)]]
    total = FingerprintPartial(())
    for p in reversed(parts):
        total = total.merge(p)
    assert total.hexdigest() == fingerprint_table(t)
    assert FingerprintPartial.from_dict(total.to_dict()) == total


@pytest.mark.parametrize("col", ["id", "x", "k", "cat", "ts", "flag"])
def test_any_single_changed_cell_changes_digest(seed, col):
    t = _table(seed)
    base = fingerprint_table(t)
    row = int(np.random.default_rng(seed).integers(1, t.num_rows))
    values = t.column(col).to_pylist()
    v = values[row]
    if col in ("id", "cat"):
        values[row] = (v or "") + "_changed"
    elif col == "x":
        values[row] = 0.5 if v is None or np.isnan(v) else v + 1e-12 * max(1.0, abs(v))
    elif col == "k":
        values[row] = v + 1
    elif col == "ts":
        values[row] = v.replace(microsecond=(v.microsecond + 1) % 1_000_000)
    else:
        values[row] = not v
    t2 = t.set_column(t.schema.get_field_index(col), col, pa.array(values, t.schema.field(col).type))
    assert fingerprint_table(t2) != base


def test_null_differs_from_empty_string_and_zero():
    a = pa.table({"s": pa.array(["", "x"]), "v": pa.array([0.0, 1.0])})
    b = pa.table({"s": pa.array([None, "x"]), "v": pa.array([0.0, 1.0])})
    c = pa.table({"s": pa.array(["", "x"]), "v": pa.array([None, 1.0])})
    assert len({fingerprint_table(a), fingerprint_table(b), fingerprint_table(c)}) == 3


def test_swapping_values_between_columns_changes_digest():
    a = pa.table({"p": [1.0, 2.0], "q": [3.0, 4.0]})
    b = pa.table({"p": [3.0, 2.0], "q": [1.0, 4.0]})
    assert fingerprint_table(a) != fingerprint_table(b)


def test_duplicate_rows_count():
    t = _table(0, 10)
    assert fingerprint_table(t) != fingerprint_table(pa.concat_tables([t, t.slice(0, 1)]))


def test_physical_types_normalised():
    a = pa.table(
        {
            "i": pa.array([1, 2], pa.int32()),
            "s": pa.array(["a", "b"], pa.large_string()),
            "f": pa.array([0.0, 1.5], pa.float32()),
        }
    )
    b = pa.table(
        {
            "i": pa.array([1, 2], pa.int64()),
            "s": pa.array(["a", "b"]).dictionary_encode(),
            "f": pa.array([-0.0, 1.5], pa.float64()),
        }
    )
    assert fingerprint_table(a) == fingerprint_table(b)


def test_source_fingerprint_independent_of_sharding_and_file_layout(tmp_path, seed):
    t = _table(seed, 3000)
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir(), many.mkdir()
    pq.write_table(t, one / "all.parquet", row_group_size=1000)
    perm = np.random.default_rng(seed).permutation(t.num_rows)
    for i, chunk in enumerate(np.array_split(perm, 7)):
        pq.write_table(t.take(pa.array(chunk)), many / f"part-{i}.parquet", row_group_size=97)
    d1, n1 = fingerprint_source(str(one), batch_size=500)
    d2, n2 = fingerprint_source(str(many), batch_size=333)
    assert (d1, n1) == (d2, n2) == (fingerprint_table(t), 3000)
