"""Request validation for the HTTP scoring routes (``mlops_ray.serve.schema``): pure, no Ray/MLflow/FastAPI.

Every 422 the module can raise is pinned by its exact ``loc`` and a fragment of its ``msg``;
the happy path is pinned by the Arrow table it returns.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from mlops_ray.serve.schema import (
    MAX_ERRORS,
    FeatureSchema,
    NumberOutOfRange,
    RequestError,
    check_finite,
    json_safe,
    mlflow_payload_to_records,
    predict_payload_to_records,
    records_to_table,
    show,
)

SCHEMA = FeatureSchema(numeric=("age", "income"), categorical=("city",), passthrough=("id",))
GOOD = {"age": 30, "income": 1234.5, "city": "Paris"}


def _rec(**overrides):
    """A valid record with some fields replaced; a value of ``...`` removes the field."""
    rec = {**GOOD, **overrides}
    return {k: v for k, v in rec.items() if v is not ...}


def _errors(records, schema=SCHEMA, **kw) -> list[dict]:
    with pytest.raises(RequestError) as ei:
        records_to_table(records, schema, **kw)
    return ei.value.errors


def _payload_errors(body) -> list[dict]:
    with pytest.raises(RequestError) as ei:
        mlflow_payload_to_records(body)
    return ei.value.errors


# --------------------------------------------------------------------------- FeatureSchema
def test_from_meta_with_id_column_makes_it_passthrough():
    s = FeatureSchema.from_meta({"numeric_features": ["a", "b"], "categorical_features": ["c"], "id_column": "id"})
    assert s == FeatureSchema(("a", "b"), ("c",), ("id",))
    assert s.features == ("a", "b", "c")


@pytest.mark.parametrize("meta_extra", [{}, {"id_column": None}, {"id_column": ""}], ids=["absent", "none", "empty"])
def test_from_meta_without_id_column_has_no_passthrough(meta_extra):
    s = FeatureSchema.from_meta({"numeric_features": ["a"], "categorical_features": [], **meta_extra})
    assert s.passthrough == ()


def test_describe_lists_every_feature_with_its_json_type():
    assert SCHEMA.describe() == {"age": "number|null", "income": "number|null", "city": "string|null"}


# --------------------------------------------------------------------------- RequestError
def test_request_error_caps_errors_and_formats_message():
    errs = [{"loc": ["records", i, "age"], "msg": "bad"} for i in range(MAX_ERRORS + 20)]
    e = RequestError(errs)
    assert MAX_ERRORS == 50
    assert len(e.errors) == MAX_ERRORS
    assert e.errors[-1]["loc"] == ["records", MAX_ERRORS - 1, "age"]
    assert str(e).startswith("records.0.age: bad; records.1.age: bad")


# --------------------------------------------------------------------------- records_to_table: happy path
def test_valid_records_give_arrow_table_with_feature_columns_only():
    t = records_to_table([_rec(id=7), _rec(age=41.5, income=0, city="Oslo", id="x")], SCHEMA)
    assert isinstance(t, pa.Table)
    assert t.column_names == ["age", "income", "city"]  # numeric first, then categorical; id dropped
    assert t.schema.field("age").type == pa.float64()
    assert t.schema.field("income").type == pa.float64()
    assert t.schema.field("city").type == pa.string()
    assert t.to_pydict() == {"age": [30.0, 41.5], "income": [1234.5, 0.0], "city": ["Paris", "Oslo"]}


def test_ints_are_accepted_for_numeric_features_and_become_float64():
    t = records_to_table([_rec(age=0, income=-(2**40))], SCHEMA)
    assert t.column("age").to_pylist() == [0.0]
    assert t.column("income").to_pylist() == [float(-(2**40))]
    assert t.column("income").type == pa.float64()


def test_nulls_are_kept_as_missing_values():
    t = records_to_table([_rec(age=None, city=None), _rec(income=None)], SCHEMA)
    # categorical null stays an Arrow null; numeric null is stored as NaN (what preprocessing imputes)
    assert t.column("city").to_pylist() == [None, "Paris"]
    assert t.column("city").null_count == 1
    age = t.column("age").to_pylist()
    income = t.column("income").to_pylist()
    assert math.isnan(age[0]) and age[1] == 30.0
    assert income[0] == 1234.5 and math.isnan(income[1])


def test_passthrough_column_is_optional_and_any_type():
    for rec in (_rec(), _rec(id=None), _rec(id={"nested": [1]})):
        assert records_to_table([rec], SCHEMA).to_pydict() == {"age": [30.0], "income": [1234.5], "city": ["Paris"]}


def test_any_string_is_a_valid_category_including_empty():
    t = records_to_table([_rec(city=""), _rec(city="never seen in training ü")], SCHEMA)
    assert t.column("city").to_pylist() == ["", "never seen in training ü"]


def test_schema_without_passthrough_rejects_id_column():
    s = FeatureSchema(("age", "income"), ("city",))
    assert _errors([_rec(id=1)], s) == [{"loc": ["records", 0, "id"], "msg": "unknown field (not a model feature)"}]


# --------------------------------------------------------------------------- records_to_table: request-level
@pytest.mark.parametrize(
    "records", [None, {"age": 1}, "abc", 3, ({"age": 1},)], ids=["null", "object", "string", "number", "tuple"]
)
def test_records_not_a_list(records):
    assert _errors(records) == [{"loc": ["records"], "msg": "expected a list of objects"}]


def test_records_empty_list():
    assert _errors([]) == [{"loc": ["records"], "msg": "must contain at least one record"}]


@pytest.mark.parametrize("loc", [("rows",), ("body", "records")])
def test_request_level_errors_use_loc_prefix(loc):
    assert _errors(None, loc=loc) == [{"loc": list(loc), "msg": "expected a list of objects"}]
    assert _errors([], loc=loc) == [{"loc": list(loc), "msg": "must contain at least one record"}]


def test_no_limit_on_record_count():
    # the module has no record cap (body size is limited by the HTTP layer)
    assert records_to_table([GOOD] * 5000, SCHEMA).num_rows == 5000


# --------------------------------------------------------------------------- records_to_table: per-record
@pytest.mark.parametrize(
    ("rec", "type_name"),
    [([1, 2], "list"), ("x", "str"), (3, "int"), (None, "NoneType"), (True, "bool"), (1.5, "float")],
)
def test_record_not_an_object(rec, type_name):
    assert _errors([GOOD, rec]) == [{"loc": ["records", 1], "msg": f"expected an object, got {type_name}"}]


@pytest.mark.parametrize("field", ["age", "income", "city"])
def test_missing_feature_is_required(field):
    assert _errors([_rec(**{field: ...})]) == [
        {"loc": ["records", 0, field], "msg": "field required (send null for a missing value)"}
    ]


@pytest.mark.parametrize("key", ["AGE", "unknown", "", "city "])
def test_unknown_field(key):
    assert _errors([_rec(**{key: 1})]) == [{"loc": ["records", 0, key], "msg": "unknown field (not a model feature)"}]


@pytest.mark.parametrize(
    ("value", "msg"),
    [
        ("abc", "expected a number or null, got 'abc'"),
        ("12", "expected a number or null, got '12'"),  # numeric strings are not coerced
        ("", "expected a number or null, got ''"),
        (True, "expected a number or null, got True"),
        (False, "expected a number or null, got False"),
        ([1], "expected a number or null, got [1]"),
        ({"v": 1}, "expected a number or null, got {'v': 1}"),
        (float("nan"), "must be a finite number (use null for a missing value)"),
        (float("inf"), "must be a finite number (use null for a missing value)"),
        (float("-inf"), "must be a finite number (use null for a missing value)"),
    ],
)
def test_wrong_type_for_numeric_feature(value, msg):
    assert _errors([GOOD, _rec(income=value)]) == [{"loc": ["records", 1, "income"], "msg": msg}]


@pytest.mark.parametrize(
    ("value", "msg"),
    [
        (1, "expected a string or null, got 1"),
        (1.5, "expected a string or null, got 1.5"),
        (True, "expected a string or null, got True"),
        (["a"], "expected a string or null, got ['a']"),
        ({"a": 1}, "expected a string or null, got {'a': 1}"),
        (float("nan"), "expected a string or null, got nan"),
    ],
)
def test_wrong_type_for_categorical_feature(value, msg):
    assert _errors([_rec(city=value)]) == [{"loc": ["records", 0, "city"], "msg": msg}]


@pytest.mark.parametrize(
    ("field", "prefix"), [("age", "expected a number or null, got '"), ("city", "expected a string or null, got ")]
)
def test_long_bad_values_are_truncated_in_message(field, prefix):
    value = "x" * 1000 if field == "age" else ["x" * 1000]
    (err,) = _errors([_rec(**{field: value})])
    assert err["loc"] == ["records", 0, field]
    assert err["msg"].startswith(prefix + ("x" if field == "age" else "['x"))
    assert len(err["msg"]) == 200


@pytest.mark.parametrize("loc", [("rows",), ("body", "records")])
def test_per_record_errors_use_loc_prefix(loc):
    errs = _errors([GOOD, "bad", _rec(age="x", extra=1)], loc=loc)
    assert errs == [
        {"loc": [*loc, 1], "msg": "expected an object, got str"},
        {"loc": [*loc, 2, "extra"], "msg": "unknown field (not a model feature)"},
        {"loc": [*loc, 2, "age"], "msg": "expected a number or null, got 'x'"},
    ]


def test_all_errors_reported_at_once_in_record_then_field_order():
    records = [
        _rec(),
        _rec(zzz=1, age=..., income="1", city=3),  # unknown first, then numeric, then categorical
        [],
        _rec(city=...),
        _rec(age=None, income=None, city=None),  # valid
        _rec(age=float("nan"), a=1, b=2),
    ]
    assert _errors(records) == [
        {"loc": ["records", 1, "zzz"], "msg": "unknown field (not a model feature)"},
        {"loc": ["records", 1, "age"], "msg": "field required (send null for a missing value)"},
        {"loc": ["records", 1, "income"], "msg": "expected a number or null, got '1'"},
        {"loc": ["records", 1, "city"], "msg": "expected a string or null, got 3"},
        {"loc": ["records", 2], "msg": "expected an object, got list"},
        {"loc": ["records", 3, "city"], "msg": "field required (send null for a missing value)"},
        {"loc": ["records", 5, "a"], "msg": "unknown field (not a model feature)"},
        {"loc": ["records", 5, "b"], "msg": "unknown field (not a model feature)"},
        {"loc": ["records", 5, "age"], "msg": "must be a finite number (use null for a missing value)"},
    ]


def test_error_list_is_capped_at_max_errors_one_per_record():
    errs = _errors([_rec(age="bad")] * (MAX_ERRORS * 3))
    assert len(errs) == MAX_ERRORS
    assert [e["loc"] for e in errs] == [["records", i, "age"] for i in range(MAX_ERRORS)]


def test_error_list_is_capped_at_max_errors_many_per_record():
    errs = _errors([_rec(age="a", income="b", city=1)] * 100)  # 3 errors per record
    assert len(errs) == MAX_ERRORS
    assert errs[0] == {"loc": ["records", 0, "age"], "msg": "expected a number or null, got 'a'"}
    assert errs[-1]["loc"] == ["records", (MAX_ERRORS - 1) // 3, ["age", "income", "city"][(MAX_ERRORS - 1) % 3]]


def test_validation_stops_scanning_once_the_cap_is_reached():
    seen = []

    class Spy(dict):  # records after the cap must not be looked at (bounded work on huge bad bodies)
        def __iter__(self):
            seen.append(self)
            return super().__iter__()

    errs = _errors([_rec(age="bad")] * MAX_ERRORS + [Spy(GOOD)])
    assert len(errs) == MAX_ERRORS and seen == []


def test_error_list_is_capped_within_a_single_record():
    errs = _errors([_rec(**{f"k{i:03d}": 1 for i in range(MAX_ERRORS + 30)})])
    assert len(errs) == MAX_ERRORS
    assert errs[-1] == {"loc": ["records", 0, f"k{MAX_ERRORS - 1:03d}"], "msg": "unknown field (not a model feature)"}


def test_integer_too_large_for_float_is_a_request_error():
    (err,) = _errors([_rec(income=10**400)])
    assert err["loc"] == ["records", 0, "income"]
    assert "number" in err["msg"]


def test_integer_beyond_pythons_digit_limit_is_a_request_error():
    # repr() of an int of more than 4300 digits raises ValueError: the message must not call it
    (err,) = _errors([_rec(income=10**5000, city=10**5000)])[:1]
    assert err["loc"] == ["records", 0, "income"] and "out of range" in err["msg"]
    errs = _errors([_rec(city=10**5000)])
    assert errs == [
        {"loc": ["records", 0, "city"], "msg": "expected a string or null, got an integer of about 5001 digits"}
    ]


@pytest.mark.parametrize("text", ["1e400", "-1" + "0" * 400, "1" + "0" * 5000])
def test_number_out_of_range_from_the_parser_is_a_request_error(text):
    (err,) = _errors([_rec(age=NumberOutOfRange(text))])
    assert err["loc"] == ["records", 0, "age"]
    assert err["msg"].startswith("number out of range") and len(err["msg"]) < 150
    (err,) = _errors([_rec(city=NumberOutOfRange(text))])
    assert err["loc"] == ["records", 0, "city"] and err["msg"].startswith("expected a string or null, got ")


@pytest.mark.parametrize("value", ["\ud800", "a\udfffb", "ok \udc80"])
def test_lone_surrogate_in_a_category_is_a_request_error(value):
    (err,) = _errors([_rec(city=value)])
    assert err["loc"] == ["records", 0, "city"]
    assert err["msg"].startswith("not valid Unicode: lone surrogate")
    assert json_safe(err)["msg"].encode("utf-8")  # the message itself is valid Unicode


def test_lone_surrogate_as_a_key_is_an_unknown_field_and_serialisable():
    errs = _errors([_rec(**{"\ud800": 1})])
    assert errs == [{"loc": ["records", 0, "\ud800"], "msg": "unknown field (not a model feature)"}]
    safe = json_safe(errs)
    assert safe == [{"loc": ["records", 0, "\\ud800"], "msg": "unknown field (not a model feature)"}]
    assert json.dumps(safe, ensure_ascii=False).encode("utf-8")


def test_value_nested_1000_deep_gives_a_bounded_message():
    deep: list = []
    cur = deep
    for _ in range(1000):
        cur.append([])
        cur = cur[0]
    errs = _errors([_rec(age=deep, city=deep)])
    assert errs == [
        {"loc": ["records", 0, "age"], "msg": "expected a number or null, got [[[[...]]]]"},
        {"loc": ["records", 0, "city"], "msg": "expected a string or null, got [[[[...]]]]"},
    ]


def test_show_is_bounded_for_any_value():
    assert show([1]) == "[1]" and show("abc") == "'abc'"
    assert len(show(list(range(10_000)))) < 100
    assert len(show("x" * 10_000)) <= 200
    assert show(10**5000) == "an integer of about 5001 digits"


def test_json_safe_leaves_valid_values_alone():
    value = {"loc": ["records", 0, "città"], "msg": "ok ü \U0001f600", "n": 3}
    assert json_safe(value) == value


# --------------------------------------------------------------------------- predict body, finite matrix
def test_predict_payload_to_records():
    assert predict_payload_to_records({"records": [GOOD]}) == [GOOD]
    for body in (None, [], {"rows": []}, "x"):
        with pytest.raises(RequestError) as ei:
            predict_payload_to_records(body)
        assert ei.value.errors == [{"loc": ["body", "records"], "msg": 'field required: {"records": [...]}'}]
    with pytest.raises(RequestError) as ei:
        predict_payload_to_records({"records": [], "b": 1, "a": 2})
    assert ei.value.errors == [
        {"loc": ["body", "a"], "msg": "unknown field"},
        {"loc": ["body", "b"], "msg": "unknown field"},
    ]


def test_check_finite_names_the_row_and_feature_that_overflowed():
    x = np.zeros((3, 3), dtype=np.float32)
    check_finite(x, ["age", "income", "city=a"])
    x[1, 0] = np.nan  # missing is fine
    check_finite(x, ["age", "income", "city=a"])
    x[2, 1] = np.inf
    x[0, 0] = -np.inf
    with pytest.raises(RequestError) as ei:
        check_finite(x, ["age", "income", "city=a"], loc=("rows",))
    assert [e["loc"] for e in ei.value.errors] == [["rows", 0, "age"], ["rows", 2, "income"]]
    assert "out of range" in ei.value.errors[0]["msg"]


# --------------------------------------------------------------------------- mlflow_payload_to_records: formats
def test_dataframe_split():
    body = {"dataframe_split": {"columns": ["age", "city"], "data": [[1, "a"], [None, None]]}}
    assert mlflow_payload_to_records(body) == (
        [{"age": 1, "city": "a"}, {"age": None, "city": None}],
        "dataframe_split",
    )


def test_dataframe_split_ignores_index_and_allows_empty_data():
    body = {"dataframe_split": {"index": [5], "columns": ["age"], "data": [[2]]}}
    assert mlflow_payload_to_records(body) == ([{"age": 2}], "dataframe_split")
    assert mlflow_payload_to_records({"dataframe_split": {"columns": ["a"], "data": []}}) == ([], "dataframe_split")


@pytest.mark.parametrize("fmt", ["dataframe_records", "instances", "inputs"])
def test_list_of_records_formats_are_passed_through(fmt):
    recs = [{"age": 1}, {"age": 2, "city": None}]
    out, name = mlflow_payload_to_records({fmt: recs})
    assert (out, name) == (recs, fmt)


def test_inputs_as_dict_of_columns():
    body = {"inputs": {"age": [1, 2], "city": ["a", None]}}
    assert mlflow_payload_to_records(body) == ([{"age": 1, "city": "a"}, {"age": 2, "city": None}], "inputs")


def test_inputs_dict_of_empty_columns_gives_no_records():
    assert mlflow_payload_to_records({"inputs": {"age": [], "city": []}}) == ([], "inputs")


def test_other_top_level_keys_are_ignored():
    body = {"dataframe_records": [{"age": 1}], "params": {"x": 1}}
    assert mlflow_payload_to_records(body) == ([{"age": 1}], "dataframe_records")


@pytest.mark.parametrize(
    "body",
    [
        {"dataframe_split": {"columns": list(GOOD) + ["id"], "data": [[*GOOD.values(), 9]]}},
        {"dataframe_records": [_rec(id=9)]},
        {"instances": [GOOD]},
        {"inputs": [GOOD]},
        {"inputs": {k: [v] for k, v in GOOD.items()}},
    ],
    ids=["dataframe_split", "dataframe_records", "instances", "inputs-list", "inputs-dict"],
)
def test_every_format_feeds_records_to_table(body):
    records, _ = mlflow_payload_to_records(body)
    assert records_to_table(records, SCHEMA, loc=("rows",)).to_pylist() == [
        {"age": 30.0, "income": 1234.5, "city": "Paris"}
    ]


def test_records_from_payload_are_validated_with_rows_loc():
    records, _ = mlflow_payload_to_records({"instances": [[30, 1.0, "a"]]})  # tensor-style rows are not objects
    assert _errors(records, loc=("rows",)) == [{"loc": ["rows", 0], "msg": "expected an object, got list"}]
    records, _ = mlflow_payload_to_records({"dataframe_split": {"columns": ["age"], "data": []}})
    assert _errors(records, loc=("rows",)) == [{"loc": ["rows"], "msg": "must contain at least one record"}]


# --------------------------------------------------------------------------- mlflow_payload_to_records: rejections
@pytest.mark.parametrize("body", [None, [], [{"age": 1}], "x", 1], ids=["null", "empty-list", "list", "str", "int"])
def test_body_not_an_object(body):
    assert _payload_errors(body) == [{"loc": ["body"], "msg": "expected a JSON object"}]


@pytest.mark.parametrize(
    ("body", "got"),
    [
        ({}, "[]"),
        ({"records": [GOOD]}, "['records']"),
        ({"dataframe_split": {}, "instances": []}, "['dataframe_split', 'instances']"),
        ({"inputs": [], "instances": [], "x": 1}, "['inputs', 'instances', 'x']"),
    ],
    ids=["empty", "unknown-key", "two-keys", "two-keys-plus-other"],
)
def test_body_needs_exactly_one_known_key(body, got):
    (err,) = _payload_errors(body)
    assert err["loc"] == ["body"]
    assert err["msg"] == f"expected exactly one of dataframe_split, dataframe_records, instances, inputs; got {got}"


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        "x",
        {},
        {"columns": ["a"]},
        {"data": [[1]]},
        {"columns": "a", "data": [[1]]},
        {"columns": ["a"], "data": {"a": [1]}},
        {"columns": None, "data": None},
    ],
    ids=["null", "list", "str", "empty", "no-data", "no-columns", "columns-str", "data-dict", "both-null"],
)
def test_dataframe_split_wrong_shape(value):
    assert _payload_errors({"dataframe_split": value}) == [
        {"loc": ["dataframe_split"], "msg": 'expected {"columns": [...], "data": [[...], ...]}'}
    ]


@pytest.mark.parametrize(
    ("data", "bad"),
    [
        ([[1, 2], [1]], 1),
        ([[1, 2], [1, 2, 3]], 1),
        ([[1, 2], {"a": 1, "b": 2}], 1),
        (["ab"], 0),
        ([None], 0),
        ([[]], 0),
    ],
    ids=["short", "long", "dict-row", "str-row", "null-row", "empty-row"],
)
def test_dataframe_split_row_length_mismatch(data, bad):
    assert _payload_errors({"dataframe_split": {"columns": ["a", "b"], "data": data}}) == [
        {"loc": ["dataframe_split", "data", bad], "msg": "expected a list of 2 values"}
    ]


@pytest.mark.parametrize("fmt", ["dataframe_records", "instances", "inputs"])
@pytest.mark.parametrize("value", [None, "abc", 3, True], ids=["null", "str", "int", "bool"])
def test_list_formats_need_a_list(fmt, value):
    assert _payload_errors({fmt: value}) == [{"loc": [fmt], "msg": "expected a list of objects"}]


@pytest.mark.parametrize("fmt", ["dataframe_records", "instances"])
def test_only_inputs_accepts_dict_of_columns(fmt):
    assert _payload_errors({fmt: {"age": [1]}}) == [{"loc": [fmt], "msg": "expected a list of objects"}]


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"age": [1, 2], "city": ["a"]},
        {"age": [1], "city": "a"},
        {"age": 1},
        {"age": [1], "city": None},
    ],
    ids=["empty", "unequal-lengths", "scalar-column", "all-scalars", "null-column"],
)
def test_inputs_dict_wrong_shape(value):
    assert _payload_errors({"inputs": value}) == [
        {"loc": ["inputs"], "msg": "expected {column: [values]} with equal-length lists"}
    ]


def test_dataframe_split_unhashable_column_name_is_a_request_error():
    (err,) = _payload_errors({"dataframe_split": {"columns": [["age"]], "data": [[1]]}})
    assert err["loc"][0] == "dataframe_split"
    assert err == {"loc": ["dataframe_split", "columns", 0], "msg": "expected a column name (string), got ['age']"}


def test_dataframe_split_duplicate_columns_is_a_request_error():
    (err,) = _payload_errors({"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}})
    assert err["loc"][0] == "dataframe_split"
    assert "age" in err["msg"]
    assert err == {"loc": ["dataframe_split", "columns", 1], "msg": "duplicate column name 'age'"}


def test_dataframe_split_reports_every_bad_column_at_once():
    errs = _payload_errors({"dataframe_split": {"columns": ["a", 1, None, {"k": 1}, "a", "b", "b"], "data": []}})
    assert [e["loc"][2] for e in errs] == [1, 2, 3, 4, 6]
    assert [e["msg"].split(" ")[0] for e in errs] == ["expected", "expected", "expected", "duplicate", "duplicate"]
