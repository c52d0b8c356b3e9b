"""Request parsing and validation against a model's feature schema (pure; no Ray, no FastAPI).

Every problem is reported with its location, FastAPI-style::

    {"loc": ["records", 3, "income"], "msg": "expected a number or null, got 'abc'"}

so a client sees each bad field and record index at once. Missing *values* (null) are
valid: preprocessing imputes them exactly as in training; unseen categories go to the
``__other__`` bucket.
"""

from __future__ import annotations

import math
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


def _check_number(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"expected a number or null, got {v!r}"[:200]
    if isinstance(v, float) and not math.isfinite(v):
        return "must be a finite number (use null for a missing value)"
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
            if v is not None and not isinstance(v, str):
                errors.append({"loc": [*loc, i, f], "msg": f"expected a string or null, got {v!r}"[:200]})
            else:
                cat_cols[f][i] = v
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise RequestError(errors)
    cols = {f: pa.array(num_cols[f]) for f in schema.numeric}
    cols.update({f: pa.array(cat_cols[f], type=pa.string()) for f in schema.categorical})
    return pa.table(cols)


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
