"""Open Inference Protocol V2 parsing and answers (pure; the HTTP routes are tested on a running service
with real protocol clients in tests/e2e/test_serve_v2.py)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops_ray.errors import RequestError
from mlops_ray.serve.schema import FeatureSchema, records_to_table
from mlops_ray.serve.v2 import error_message, infer_response, model_metadata, parse_infer_request

SCHEMA = FeatureSchema(("age", "income"), ("region",), ("customer_id",))


def _request(rows: list[dict], **extra) -> dict:
    n = len(rows)
    inputs = [{"name": f, "shape": [n], "datatype": "FP64", "data": [r[f] for r in rows]} for f in SCHEMA.numeric]
    inputs += [{"name": f, "shape": [n], "datatype": "BYTES", "data": [r[f] for r in rows]} for f in SCHEMA.categorical]
    return {"inputs": inputs, **extra}


ROWS = [{"age": 30, "income": 1.5e4, "region": "north"}, {"age": None, "income": -2.0, "region": None}]


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal tables, a missing value (NaN) equal to a missing value in the same place."""
    return a.schema == b.schema and a.to_pandas().equals(b.to_pandas())


def _errors(body) -> list[dict]:
    with pytest.raises(RequestError) as err:
        parse_infer_request(body, SCHEMA)
    return err.value.errors


def test_columnar_tensors_give_the_same_table_as_records():
    table, rid, outputs = parse_infer_request(_request(ROWS, id="r-1"), SCHEMA)
    assert _same(table, records_to_table(ROWS, SCHEMA)) and rid == "r-1" and outputs is None
    assert table.schema.field("age").type == pa.float64() and np.isnan(table.column("age")[1].as_py())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "age": st.one_of(
                    st.none(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False)
                ),
                "income": st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
                "region": st.one_of(st.none(), st.text(max_size=8)),
            }
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_valid_rows_parse_like_records_through_json(rows):
    body = json.loads(json.dumps(_request(rows)))
    table, _, _ = parse_infer_request(body, SCHEMA)
    assert _same(table, records_to_table(rows, SCHEMA))


def test_shape_n_by_1_and_nested_data_are_accepted_and_the_id_column_is_ignored():
    body = _request(ROWS)
    for t in body["inputs"]:
        t["shape"] = [2, 1]
        t["data"] = [[v] for v in t["data"]]
    body["inputs"].append({"name": "customer_id", "shape": [2], "datatype": "INT64", "data": [7, 8]})
    table, _, _ = parse_infer_request(body, SCHEMA)
    assert table.column_names == ["age", "income", "region"] and table.num_rows == 2


@pytest.mark.parametrize(
    ("mutate", "loc", "words"),
    [
        (lambda b: b["inputs"].pop(0), ["inputs"], "missing input 'age'"),
        (lambda b: b["inputs"][0].update(name="agee"), ["inputs", 0, "agee"], "unknown input"),
        (lambda b: b["inputs"].append(dict(b["inputs"][0])), ["inputs", 3, "age"], "given twice"),
        (lambda b: b["inputs"][1].update(shape=[3]), ["inputs", 1, "income", "shape"], "every tensor needs N"),
        (lambda b: b["inputs"][0].update(shape=[2, 2]), ["inputs", 0, "age", "shape"], "[N] or [N, 1]"),
        (lambda b: b["inputs"][0].update(data=[1.0]), ["inputs", 0, "age", "data"], "1 values for shape [2]"),
        (lambda b: b["inputs"][0].update(datatype="BYTES"), ["inputs", 0, "age", "datatype"], "numeric feature"),
        (lambda b: b["inputs"][2].update(datatype="FP64"), ["inputs", 2, "region", "datatype"], "expected BYTES"),
        (lambda b: b["inputs"][0].update(datatype="FP128"), ["inputs", 0, "age", "datatype"], "unknown datatype"),
        (lambda b: b["inputs"][0].update(data=["forty", 2]), ["inputs", 0, "age", "data", 0], "expected a number"),
        (lambda b: b["inputs"][0].update(data=[True, 2]), ["inputs", 0, "age", "data", 0], "expected a number"),
        (lambda b: b["inputs"][0].update(data=["1.5", 2]), ["inputs", 0, "age", "data", 0], "expected a number"),
        (lambda b: b["inputs"][0].update(data=[10**400, 2]), ["inputs", 0, "age", "data", 0], "out of range"),
        (lambda b: b["inputs"][2].update(data=["a", 3]), ["inputs", 2, "region", "data", 1], "expected a string"),
        (
            lambda b: (b["inputs"][0].update(parameters={"binary_data_size": 16}), b["inputs"][0].pop("data")),
            ["inputs", 0, "age"],
            "no Inference-Header-Content-Length",
        ),
        (lambda b: b.update(outputs=[{"name": "proba"}]), ["outputs", 0], "unknown output"),
        (lambda b: b.update(id=5), ["id"], "expected a string"),
        (lambda b: b.update(extra=1), ["extra"], "unknown field"),
    ],
)
def test_each_bad_request_names_its_tensor_and_element(mutate, loc, words):
    body = _request(ROWS)
    mutate(body)
    errors = _errors(body)
    assert any(e["loc"] == loc and words in e["msg"] for e in errors), errors


@pytest.mark.parametrize("body", [None, [], "x", {}, {"inputs": []}, {"inputs": "age"}, {"inputs": [3]}])
def test_a_body_without_tensors_is_a_clear_error(body):
    assert _errors(body)


def test_error_message_is_one_line_naming_each_location():
    msg = error_message([{"loc": ["inputs", 0, "age", "data", 3], "msg": "expected a number"}, {"loc": [], "msg": "x"}])
    assert msg == "inputs.0.age.data.3: expected a number; x"
    assert error_message("no model loaded") == "no model loaded"


def test_infer_response_has_the_protocols_fields_and_the_outputs_asked_for():
    labels, proba = np.array([1, 0]), np.array([0.9, 0.2])
    body = infer_response("m", "3", "r-1", labels, proba, None)
    assert body["model_name"] == "m" and body["model_version"] == "3" and body["id"] == "r-1"
    assert body["outputs"] == [
        {"name": "predict", "datatype": "INT64", "shape": [2], "data": [1, 0]},
        {"name": "probability", "datatype": "FP64", "shape": [2], "data": [0.9, 0.2]},
    ]
    only = infer_response("m", "3", None, labels, proba, ["probability"])
    assert [o["name"] for o in only["outputs"]] == ["probability"] and "id" not in only
    multi = infer_response("m", "3", None, np.array([2]), np.array([[0.1, 0.2, 0.7]]), None)
    assert multi["outputs"][1]["shape"] == [1, 3] and multi["outputs"][1]["data"] == [0.1, 0.2, 0.7]
    reg = infer_response("m", "3", None, np.array([1.5]), None, None)
    assert reg["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [1], "data": [1.5]}]


def test_metadata_maps_the_feature_schema_to_one_tensor_per_feature():
    meta = model_metadata("m", "2", "multiclass", SCHEMA, 3)
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [
        ("age", "FP64"),
        ("income", "FP64"),
        ("region", "BYTES"),
    ]
    assert meta["outputs"][1]["shape"] == [-1, 3] and meta["versions"] == ["2"]
