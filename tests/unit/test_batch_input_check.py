"""Batch inference input checks and staging, without Ray: the pure pre-check, the staging helpers,
and the CLI's unwrapping of our errors from Ray's wrappers."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from mlops_ray.batch.predict import _discard, _publish, _result, _staging_dir, check_input
from mlops_ray.cli import _user_error
from mlops_ray.data.sources import list_source
from mlops_ray.errors import ConfigError, DataValidationError, SchemaError

META = {
    "task": "binary",
    "id_column": "cid",
    "label_column": "label",
    "numeric_features": ["age", "income"],
    "categorical_features": ["region"],
}


def _table(n=20, **override):
    cols = {
        "cid": [f"c{i}" for i in range(n)],
        "age": [float(20 + i) for i in range(n)],
        "income": [1000.0 * i for i in range(n)],
        "region": ["north" if i % 2 else "south" for i in range(n)],
    }
    cols.update(override)
    return pa.table(cols)


def _parquet(tmp_path, table, name="in"):
    d = tmp_path / name
    d.mkdir()
    pq.write_table(table, d / "part-0.parquet")
    return list_source(str(d))


def _csv(tmp_path, tables, name="csv"):
    d = tmp_path / name
    d.mkdir()
    for i, t in enumerate(tables):
        pacsv.write_csv(t, d / f"part-{i}.csv")
    return list_source(str(d))


def test_good_input_passes_and_counts_rows(tmp_path):
    assert check_input(_parquet(tmp_path, _table(30)), META, "cid") == 30


def test_extra_columns_and_a_label_are_fine(tmp_path):
    t = _table(5).append_column("label", pa.array([0, 1, 0, 1, 0])).append_column("note", pa.array(["x"] * 5))
    assert check_input(_parquet(tmp_path, t), META, "cid") == 5


def test_missing_features_are_listed_in_one_message(tmp_path):
    src = _parquet(tmp_path, _table().drop_columns(["income", "region"]))
    with pytest.raises(SchemaError) as info:
        check_input(src, META, "cid")
    msg = str(info.value)
    assert "missing model feature(s) ['income', 'region']" in msg
    assert "'age'" in msg and "'cid'" in msg  # the columns it has


def test_missing_id_column_is_named(tmp_path):
    with pytest.raises(SchemaError, match="the id column 'cid' \\(data.id_column\\) is missing"):
        check_input(_parquet(tmp_path, _table().drop_columns(["cid"])), META, "cid")


def test_abc_in_a_numeric_column_shows_example_rows(tmp_path):
    ages = [str(20 + i) for i in range(20)]
    ages[3], ages[11] = "abc", "n/a"
    src = _parquet(tmp_path, _table(age=ages))
    with pytest.raises(SchemaError) as info:
        check_input(src, META, "cid")
    msg = str(info.value)
    assert "column 'age': values not castable to float64: 2 row(s)" in msg
    assert "cid='c3' age='abc'" in msg and "cid='c11' age='n/a'" in msg
    assert "\n" not in msg  # one problem: one line


def test_numbers_as_text_pass(tmp_path):
    ages = [f" {20 + i}.5 " for i in range(19)] + [None]
    assert check_input(_parquet(tmp_path, _table(age=ages)), META, "cid") == 20


def test_infinity_is_refused_like_data_prepare(tmp_path):
    inc = [1.0] * 20
    inc[7] = float("inf")
    with pytest.raises(SchemaError, match="column 'income': infinite values.*cid='c7'"):
        check_input(_parquet(tmp_path, _table(income=inc)), META, "cid")


def test_impossible_types_are_refused(tmp_path):
    t = _table(5, age=[[1], [2], [3], [4], [5]], region=[1.5] * 5)
    with pytest.raises(SchemaError) as info:
        check_input(_parquet(tmp_path, t), META, "cid")
    assert "numeric feature 'age' has type list<" in str(info.value)
    assert "categorical feature 'region' has type double" in str(info.value)


def test_csv_abc_in_a_later_file_is_a_value_with_its_row_not_a_conversion_error(tmp_path):
    # file 0 makes 'age' look numeric; file 1 holds the stray string (pyarrow would fail converting it)
    bad = _table(4, cid=["d0", "d1", "d2", "d3"], age=["31", "abc", "33", "34"])
    src = _csv(tmp_path, [_table(10), bad])
    with pytest.raises(SchemaError) as info:
        check_input(src, META, "cid")
    assert "cid='d1' age='abc'" in str(info.value)


def test_csv_good_input_passes(tmp_path):
    assert check_input(_csv(tmp_path, [_table(10), _table(5)]), META, "cid") == 15


def test_missing_input_is_a_clean_error(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        list_source(str(tmp_path / "nope"))


# ------------------------------------------------------------------ staging: all or nothing
def test_staging_is_renamed_to_the_output(tmp_path):
    out = tmp_path / "a" / "b" / "preds"
    staging, created = _staging_dir(out)
    assert staging.parent == out.parent and staging.name.startswith("preds.staging-")
    assert created == [tmp_path / "a" / "b", tmp_path / "a"]
    (staging / "part-0.parquet").write_bytes(b"x")
    _publish(staging, out)
    assert (out / "part-0.parquet").read_bytes() == b"x" and not staging.exists()


def test_an_empty_output_directory_is_replaced(tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    staging, created = _staging_dir(out)
    (staging / "_manifest.json").write_text("{}")
    _publish(staging, out)
    assert created == [] and sorted(p.name for p in out.iterdir()) == ["_manifest.json"]


def test_a_failure_leaves_nothing_behind(tmp_path):
    out = tmp_path / "new" / "preds"
    staging, created = _staging_dir(out)
    (staging / "part-0.parquet").write_bytes(b"partial")
    _discard(staging, created)
    assert list(tmp_path.iterdir()) == []


def test_publish_onto_a_non_empty_output_is_a_clean_error(tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / "other").write_text("x")
    staging, _ = _staging_dir(out)
    with pytest.raises(ConfigError, match="cannot move the finished output"):
        _publish(staging, out)


def test_actor_errors_travel_as_data():
    err = pickle.loads(
        _result([0], [b""], [pickle.dumps(SchemaError("input lacks model features ['x']"))])["error"][0].as_py()
    )
    assert isinstance(err, SchemaError) and str(err) == "input lacks model features ['x']"


# ------------------------------------------------------------------ CLI: our errors inside Ray's
class _FakeRayError(Exception):
    """Stands in for ray.exceptions.* (same module prefix) without importing Ray."""


_FakeRayError.__module__ = "ray.exceptions"


def test_user_error_plain_and_chained():
    assert _user_error(SchemaError("bad")) == "bad"
    try:
        try:
            raise SchemaError("inner")
        except SchemaError as e:
            raise RuntimeError("wrapper") from e
    except RuntimeError as outer:
        assert _user_error(outer) == "inner"
    assert _user_error(RuntimeError("a bug")) is None


def test_user_error_of_a_dual_ray_task_error_is_the_cause_not_the_traceback():
    class Dual(_FakeRayError, SchemaError):  # what RayTaskError(SchemaError) looks like
        def __init__(self, cause):
            self.cause = cause

        def __str__(self):
            return (
                "ray::MapBatches() (pid=1)\nTraceback (most recent call last):\n  ...\nmlops_ray.errors.SchemaError: x"
            )

    assert _user_error(Dual(SchemaError("input lacks model features ['age']"))) == (
        "input lacks model features ['age']"
    )


def test_user_error_from_the_text_of_a_ray_data_user_code_exception():
    # Ray pickles the UserCodeException without its __cause__: only the worker traceback names ours
    text = (
        "ray::MapBatches(_ScoreUnits)() (pid=42, ip=127.0.0.1)\n"
        "Traceback (most recent call last):\n"
        '  File "predict.py", line 1, in __call__\n'
        "mlops_ray.errors.DataValidationError: data validation failed:\n"
        "  - column 'age': values not castable to float64: 1 row(s); e.g. cid='c1' age='abc'\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "ray.exceptions.UserCodeException: UDF failed to process a data block."
    )
    assert _user_error(_FakeRayError(text)) == (
        "data validation failed:\n  - column 'age': values not castable to float64: 1 row(s); e.g. cid='c1' age='abc'"
    )
    assert _user_error(RuntimeError(text)) is None  # only Ray's wrappers are read as text
