"""Request parsing and validation against a model's feature schema (pure; no Ray, no FastAPI).

Every problem is reported with its location, FastAPI-style::

    {"loc": ["records", 3, "income"], "msg": "expected a number or null, got 'abc'"}

so a client sees each bad field and record index at once. Missing *values* (null) are
valid: preprocessing imputes them exactly as in training; unseen categories go to the
``__other__`` bucket. Any JSON value, however large, deep or odd, gives a 422 naming its
field, never an exception: numbers beyond the float64 range, strings that are not valid
Unicode (lone surrogates), nesting a thousand levels deep (messages show values through a
bounded ``repr``), and :func:`json_safe` makes every error body serialisable.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_ray.errors import RequestError

MAX_ERRORS = RequestError.MAX_ERRORS


@dataclass(frozen=True)
class FeatureSchema:
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    passthrough: tuple[str, ...] = ()  # accepted and ignored (e.g. the id column)

    @classmethod
    def from_meta(cls, meta: dict) -> "FeatureSchema":
        extra = tuple(c for c in (meta.get("id_column"),) if c)
        return cls(tuple(meta["numeric_features"]), tuple(meta["categorical_features"]), extra)

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    def describe(self) -> dict[str, str]:
        return {**{f: "number|null" for f in self.numeric}, **{f: "string|null" for f in self.categorical}}


class NumberOutOfRange:
    """A JSON number beyond the float64 range (e.g. ``1e400`` or an integer of 400 digits).

    The JSON reader (:func:`mlops_ray.serve.body.parse_json`) puts one in place of such a
    number, so that validation reports it with its field instead of the parser failing.
    """

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        t = self.text
        return t if len(t) <= 24 else f"{t[:12]}...{t[-6:]} ({len(t)} characters)"

    def __eq__(self, other) -> bool:
        return isinstance(other, NumberOutOfRange) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


_OUT_OF_RANGE = "number out of range (beyond the 64-bit float range, about 1.8e308)"
_SHOW = reprlib.Repr()
_SHOW.maxlevel = 3  # a value nested 1,000 deep shows as [[[[...]]]]: repr() itself would recurse
_SHOW.maxstring = _SHOW.maxother = _SHOW.maxlong = 200
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 10


def show(v: Any) -> str:
    """A bounded ``repr`` for messages: any size, depth or integer length (no RecursionError,
    no ``ValueError`` from Python's 4300-digit int-to-str limit)."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 1000:
        return f"an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
    return _SHOW.repr(v)


def _check_number(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, NumberOutOfRange):
        return f"{_OUT_OF_RANGE}: {v!r}"
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"expected a number or null, got {show(v)}"[:200]
    if isinstance(v, int):
        try:
            float(v)
        except OverflowError:
            return f"{_OUT_OF_RANGE}: {show(v)}"[:200]
        return None
    if not math.isfinite(v):
        return "must be a finite number (use null for a missing value)"
    return None


def _check_string(v) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str):
        return f"expected a string or null, got {show(v)}"[:200]
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError as err:
            return f"not valid Unicode: lone surrogate {v[err.start]!r} at position {err.start}"
    return None


def records_to_table(records: Any, schema: FeatureSchema, loc: tuple = ("records",)) -> pa.Table:
    """Validate a list of ``{feature: value}`` objects and return the feature columns as Arrow.

    Raises:
        RequestError: every missing/extra/mistyped field with its record index.
    """
    if not isinstance(records, list):
        raise RequestError([{"loc": list(loc), "msg": "expected a list of objects"}])
    if not records:
        raise RequestError([{"loc": list(loc), "msg": "must contain at least one record"}])
    errors: list[dict[str, Any]] = []
    allowed = set(schema.features) | set(schema.passthrough)
    num_cols = {f: np.empty(len(records), dtype=np.float64) for f in schema.numeric}
    cat_cols: dict[str, list] = {f: [None] * len(records) for f in schema.categorical}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            errors.append({"loc": [*loc, i], "msg": f"expected an object, got {type(rec).__name__}"})
            continue
        for key in rec:
            if key not in allowed:
                errors.append({"loc": [*loc, i, key], "msg": "unknown field (not a model feature)"})
        for f in schema.numeric:
            if f not in rec:
                errors.append({"loc": [*loc, i, f], "msg": "field required (send null for a missing value)"})
                continue
            v = rec[f]
            problem = _check_number(v)
            if problem:
                errors.append({"loc": [*loc, i, f], "msg": problem})
            else:
                num_cols[f][i] = np.nan if v is None else float(v)
        for f in schema.categorical:
            if f not in rec:
                errors.append({"loc": [*loc, i, f], "msg": "field required (send null for a missing value)"})
                continue
            v = rec[f]
            problem = _check_string(v)
            if problem:
                errors.append({"loc": [*loc, i, f], "msg": problem})
            else:
                cat_cols[f][i] = v
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise RequestError(errors)
    cols = {f: pa.array(num_cols[f]) for f in schema.numeric}
    cols.update({f: pa.array(cat_cols[f], type=pa.string()) for f in schema.categorical})
    return pa.table(cols)


def predict_payload_to_records(body: Any) -> Any:
    """The records of a ``POST /predict`` body ``{"records": [...]}`` (validated by :func:`records_to_table`)."""
    if not isinstance(body, dict) or "records" not in body:
        raise RequestError([{"loc": ["body", "records"], "msg": 'field required: {"records": [...]}'}])
    extra = sorted(set(body) - {"records"})
    if extra:
        raise RequestError([{"loc": ["body", k], "msg": "unknown field"} for k in extra])
    return body["records"]


def _check_columns(cols: list, fmt: str) -> None:
    """``dataframe_split`` column names: strings, each once."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for j, c in enumerate(cols):
        if not isinstance(c, str):
            errors.append({"loc": [fmt, "columns", j], "msg": f"expected a column name (string), got {show(c)}"[:200]})
        elif c in seen:
            errors.append({"loc": [fmt, "columns", j], "msg": f"duplicate column name {c!r}"[:200]})
        else:
            seen.add(c)
    if errors:
        raise RequestError(errors)


def mlflow_payload_to_records(body: Any) -> tuple[list, str]:
    """Normalise MLflow scoring-server inputs to a list of records.

    Accepts ``dataframe_split`` ({columns, data}), ``dataframe_records`` (list of objects),
    ``instances`` (list of objects) and ``inputs`` (list of objects or {column: [values]}).
    Returns (records, format name).
    """
    if not isinstance(body, dict):
        raise RequestError([{"loc": ["body"], "msg": "expected a JSON object"}])
    keys = [k for k in ("dataframe_split", "dataframe_records", "instances", "inputs") if k in body]
    if len(keys) != 1:
        raise RequestError(
            [
                {
                    "loc": ["body"],
                    "msg": "expected exactly one of dataframe_split, dataframe_records, "
                    f"instances, inputs; got {sorted(body)}",
                }
            ]
        )
    fmt = keys[0]
    v = body[fmt]
    if fmt == "dataframe_split":
        if not isinstance(v, dict) or not isinstance(v.get("columns"), list) or not isinstance(v.get("data"), list):
            raise RequestError([{"loc": [fmt], "msg": 'expected {"columns": [...], "data": [[...], ...]}'}])
        cols = v["columns"]
        _check_columns(cols, fmt)
        out = []
        for i, row in enumerate(v["data"]):
            if not isinstance(row, list) or len(row) != len(cols):
                raise RequestError([{"loc": [fmt, "data", i], "msg": f"expected a list of {len(cols)} values"}])
            out.append(dict(zip(cols, row)))
        return out, fmt
    if fmt == "inputs" and isinstance(v, dict):
        lengths = {len(c) for c in v.values() if isinstance(c, list)}
        if len(lengths) != 1 or not all(isinstance(c, list) for c in v.values()):
            raise RequestError([{"loc": [fmt], "msg": "expected {column: [values]} with equal-length lists"}])
        n = lengths.pop()
        return [{k: col[i] for k, col in v.items()} for i in range(n)], fmt
    if not isinstance(v, list):
        raise RequestError([{"loc": [fmt], "msg": "expected a list of objects"}])
    return v, fmt


def check_finite(x: np.ndarray, feature_names: list[str] | tuple[str, ...], loc: tuple = ("records",)) -> None:
    """Reject rows whose preprocessed features overflowed (a finite input too large for float32
    after scaling, e.g. 1e300): the model would fail on them or answer garbage.

    Raises:
        RequestError: one entry per overflowing value, with its row and feature.
    """
    bad = np.isinf(x)
    if not bad.any():
        return
    rows, cols = np.nonzero(bad)
    raise RequestError(
        [
            {
                "loc": [*loc, int(i), feature_names[j] if j < len(feature_names) else int(j)],
                "msg": "number out of range for the model (overflows float32 after preprocessing)",
            }
            for i, j in zip(rows[:MAX_ERRORS].tolist(), cols[:MAX_ERRORS].tolist())
        ]
    )


def json_safe(value: Any) -> Any:
    """``value`` with every string made encodable as UTF-8 (a lone surrogate becomes ``\\ud800``).

    Error bodies echo client keys and values; a key like ``"\\ud800"`` would make the 422
    itself unserialisable (a plain-text 500) without this.
    """
    if isinstance(value, str):
        if value.isascii():
            return value
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


# ------------------------------------------------------------------------ OpenAPI request bodies
# The routes read the raw body themselves (bounded, validated here), so FastAPI cannot infer these;
# they document the formats and let schema-driven fuzzers (schemathesis) generate bodies. Feature
# names are not known when the app is built: a record is any object of number|string|null values.
_VALUE = {"type": ["number", "string", "null"]}
_RECORD = {"type": "object", "additionalProperties": _VALUE}
_RECORDS = {"type": "array", "minItems": 1, "items": _RECORD}

PREDICT_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["records"],
    "additionalProperties": False,
    "properties": {"records": {**_RECORDS, "description": "one object per row: {feature: value}; null = missing"}},
}

INVOCATIONS_REQUEST_SCHEMA: dict[str, Any] = {
    "description": "exactly one of dataframe_split, dataframe_records, instances, inputs (MLflow scoring formats)",
    "oneOf": [
        {
            "type": "object",
            "required": ["dataframe_split"],
            "properties": {
                "dataframe_split": {
                    "type": "object",
                    "required": ["columns", "data"],
                    "properties": {
                        "columns": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                        "data": {"type": "array", "items": {"type": "array", "items": _VALUE}},
                        "index": {"type": "array"},
                    },
                }
            },
        },
        {"type": "object", "required": ["dataframe_records"], "properties": {"dataframe_records": _RECORDS}},
        {"type": "object", "required": ["instances"], "properties": {"instances": _RECORDS}},
        {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "inputs": {
                    "oneOf": [_RECORDS, {"type": "object", "additionalProperties": {"type": "array", "items": _VALUE}}]
                }
            },
        },
    ],
}


def openapi_json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a route that reads a JSON body itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


MAX_FEEDBACK_ITEMS = 10_000

FEEDBACK_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["labels"],
    "additionalProperties": False,
    "properties": {
        "labels": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_FEEDBACK_ITEMS,
            "items": {
                "type": "object",
                "required": ["request_id", "label"],
                "additionalProperties": False,
                "properties": {
                    "request_id": {"type": "string", "minLength": 1, "maxLength": 128},
                    "record": {"type": "integer", "minimum": 0, "default": 0},
                    "label": {"type": "number", "description": "class (0/1, 0..k-1) or target value"},
                },
            },
        }
    },
}


V2_INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "description": "Open Inference Protocol V2: one tensor per feature (numeric FP64, categorical BYTES; null missing)",
    "type": "object",
    "required": ["inputs"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "shape": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0},
                        "minItems": 1,
                        "maxItems": 2,
                    },
                    "datatype": {"type": "string", "enum": ["FP64", "FP32", "INT64", "INT32", "BYTES"]},
                    "parameters": {"type": "object"},
                    "data": {"type": "array", "items": _VALUE},
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "enum": ["predict", "probability"]}},
            },
        },
    },
}
