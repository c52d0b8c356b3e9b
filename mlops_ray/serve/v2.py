"""Open Inference Protocol V2 (KServe's and Triton's REST protocol) for the tabular service (pure: no Ray,
no FastAPI, no MLflow).

**Inputs: one tensor per feature**, named after the feature, shape ``[N]`` or ``[N, 1]``, every tensor
the same ``N``: numeric features as ``FP64``/``FP32``/``FP16``/``INT*``/``UINT*``, categorical ones as
``BYTES`` (UTF-8 strings). Columnar tensors are what the protocol's clients build from arrays
(``tritonclient``'s ``InferInput.set_data_from_numpy``), each column is parsed once as an array, and
the model's schema maps one-to-one to the metadata (``GET /v2/models/{name}``). A JSON ``null`` in a
tensor's ``data`` is accepted as a missing value (imputed as in training), an extension: the protocol's
JSON has no missing values and NaN is not JSON. The id column, when the model has one, may be sent and
is ignored. Tensor data may be flat or nested by shape (row-major), as the protocol allows.

**The binary tensor extension** (what ``tritonclient`` sends by default): with the
``Inference-Header-Content-Length`` header, the body is that many bytes of JSON, then each tensor's raw
bytes in input order (``parameters.binary_data_size``): little-endian numbers (NaN = missing) or, for
``BYTES``, 4-byte little-endian lengths each followed by UTF-8. Outputs are always answered as JSON
tensors, also when asked for as binary: clients read either.

**Outputs**: ``predict`` (``INT64`` class index for classification, ``FP64`` value for regression, shape
``[N]``) and, for classification, ``probability`` (``FP64``; ``[N]`` the positive class's for binary,
``[N, K]`` for multiclass). A request's ``outputs`` selects among them.

**Errors** use the protocol's shape, ``{"error": "<message>"}``, with the service's statuses (400 not
JSON, 413 too large, 415 not JSON content, 422 a request that does not fit the model, naming the tensor
and element, 404 an unknown model or a version not served, 503 no model loaded yet).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from mlops_ray.errors import RequestError
from mlops_ray.serve.schema import MAX_ERRORS, FeatureSchema, _check_number, _check_string, show

NUMERIC_TYPES = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
ALL_TYPES = NUMERIC_TYPES | {"BYTES", "BOOL"}
OUTPUT_PREDICT = "predict"
OUTPUT_PROBABILITY = "probability"
MAX_ROWS = 100_000  # per request, as large as the body limit allows in practice


def _bad(loc: list, msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg}


def _flatten(data: Any, depth: int) -> list | None:
    """Row-major flattening of ``data`` nested ``depth`` levels (1: a flat list); None when it is not."""
    if not isinstance(data, list):
        return None
    if depth <= 1 or all(not isinstance(v, list) for v in data):
        return data
    out: list = []
    for part in data:
        flat = _flatten(part, depth - 1)
        if flat is None:
            return None
        out.extend(flat)
    return out


def _numeric_column(values: list, loc: list, errors: list) -> np.ndarray:
    if all(type(v) is float or type(v) is int for v in values):  # the fast path (no bool, str, null)
        try:
            col = np.asarray(values, dtype=np.float64)
            if np.isfinite(col).all():
                return col
        except OverflowError:  # an integer beyond the float range: reported below
            pass
    col = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        problem = _check_number(v)
        if problem:
            errors.append(_bad([*loc, i], problem))
            if len(errors) >= MAX_ERRORS:
                break
        else:
            col[i] = np.nan if v is None else float(v)
    return col


def _string_column(values: list, loc: list, errors: list) -> list:
    for i, v in enumerate(values):
        problem = _check_string(v)
        if problem:
            errors.append(_bad([*loc, i], problem))
            if len(errors) >= MAX_ERRORS:
                break
    return values


def parse_infer_request(
    body: Any, schema: FeatureSchema, binary: bytes | None = None
) -> tuple[pa.Table, str | None, list[str] | None]:
    """A ``POST /v2/models/{name}/infer`` body -> (the feature table, the request's ``id``, the output
    names asked for, or None for all).

    Raises:
        RequestError: every problem, each with its location (``inputs`` index and tensor name).
    """
    if not isinstance(body, dict):
        raise RequestError([_bad([], "expected a JSON object with 'inputs'")])
    errors: list[dict[str, Any]] = []
    for key in body:
        if key not in ("id", "parameters", "inputs", "outputs"):
            errors.append(_bad([key], "unknown field"))
    rid = body.get("id")
    if rid is not None and not isinstance(rid, str):
        errors.append(_bad(["id"], f"expected a string, got {show(rid)}"[:200]))
    if "parameters" in body and not isinstance(body["parameters"], dict):
        errors.append(_bad(["parameters"], "expected an object"))
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError([*errors, _bad(["inputs"], "required: a non-empty list of tensors")])
    outputs = _parse_outputs(body.get("outputs"), errors)
    chunks = _binary_chunks(inputs, binary, errors)
    allowed = set(schema.features) | set(schema.passthrough)
    seen: dict[str, int] = {}
    columns: dict[str, Any] = {}
    rows: int | None = None
    for i, tensor in enumerate(inputs):
        loc: list = ["inputs", i]
        if not isinstance(tensor, dict):
            errors.append(_bad(loc, "expected a tensor object {name, shape, datatype, data}"))
            continue
        name = tensor.get("name")
        if not isinstance(name, str):
            errors.append(_bad([*loc, "name"], "required: the feature's name"))
            continue
        loc = ["inputs", i, name]
        for key in tensor:
            if key not in ("name", "shape", "datatype", "parameters", "data"):
                errors.append(_bad([*loc, key], "unknown field"))
        if name not in allowed:
            errors.append(_bad(loc, "unknown input (not a model feature)"))
            continue
        if name in seen:
            errors.append(_bad(loc, f"given twice (also inputs[{seen[name]}])"))
            continue
        seen[name] = i
        shape, datatype, data = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
        if not (
            isinstance(shape, list)
            and shape
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
            and (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1))
        ):
            errors.append(_bad([*loc, "shape"], f"expected [N] or [N, 1], got {show(shape)}"[:200]))
            continue
        n = shape[0]
        if not 1 <= n <= MAX_ROWS:
            errors.append(_bad([*loc, "shape"], f"N must be between 1 and {MAX_ROWS}, got {n}"))
            continue
        if rows is None:
            rows = n
        elif n != rows:
            errors.append(_bad([*loc, "shape"], f"{n} rows, but the first tensor has {rows}: every tensor needs N"))
            continue
        if datatype not in ALL_TYPES:
            errors.append(_bad([*loc, "datatype"], f"unknown datatype {show(datatype)}"[:200]))
            continue
        if "parameters" in tensor and not isinstance(tensor["parameters"], dict):
            errors.append(_bad([*loc, "parameters"], "expected an object"))
            continue
        if i in chunks:  # the binary tensor extension: the values follow the JSON header
            if name in schema.passthrough:
                continue
            decoded = _decode_binary(chunks[i], datatype, n, loc, errors)
            if decoded is None:
                continue
            data = decoded
        elif "data" not in tensor and isinstance(tensor.get("parameters"), dict):
            if "binary_data_size" in tensor["parameters"]:
                errors.append(_bad(loc, "binary data announced, but no Inference-Header-Content-Length header"))
                continue
        flat = _flatten(data, len(shape))
        if flat is None:
            errors.append(_bad([*loc, "data"], "required: a list of values (flat or nested by shape)"))
            continue
        if len(flat) != n:
            errors.append(_bad([*loc, "data"], f"{len(flat)} values for shape {shape} ({n} expected)"))
            continue
        if name in schema.passthrough:
            continue  # e.g. the id column: accepted and ignored
        if name in schema.numeric:
            if datatype not in NUMERIC_TYPES:
                msg = f"numeric feature: expected FP64 (or another number type), got {datatype}"
                errors.append(_bad([*loc, "datatype"], msg))
                continue
            columns[name] = _numeric_column(flat, [*loc, "data"], errors)
        else:
            if datatype != "BYTES":
                errors.append(_bad([*loc, "datatype"], f"categorical feature: expected BYTES, got {datatype}"))
                continue
            columns[name] = _string_column(flat, [*loc, "data"], errors)
        if len(errors) >= MAX_ERRORS:
            break
    for f in schema.features:
        if f not in seen:
            errors.append(_bad(["inputs"], f"missing input {f!r} (one tensor per feature)"))
    if errors:
        raise RequestError(errors[:MAX_ERRORS])
    cols = {f: pa.array(columns[f]) for f in schema.numeric}
    cols.update({f: pa.array(columns[f], type=pa.string()) for f in schema.categorical})
    return pa.table(cols), rid, outputs


_BINARY_DTYPES = {
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
}  # fmt: skip


def _binary_chunks(inputs: list, binary: bytes | None, errors: list) -> dict[int, bytes]:
    """The binary part of the body cut into each tensor's bytes, in input order (``binary_data_size``)."""
    if binary is None:
        return {}
    chunks, offset = {}, 0
    for i, tensor in enumerate(inputs):
        params = tensor.get("parameters") if isinstance(tensor, dict) else None
        if not isinstance(params, dict) or "binary_data_size" not in params:
            continue
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            errors.append(_bad(["inputs", i, "parameters", "binary_data_size"], "expected a byte count"))
            return {}
        chunks[i], offset = binary[offset : offset + size], offset + size
    if offset != len(binary):
        errors.append(
            _bad(["inputs"], f"binary data: {len(binary)} bytes after the JSON header, tensors declare {offset}")
        )
        return {}
    return chunks


def _decode_binary(chunk: bytes, datatype: str, n: int, loc: list, errors: list) -> list | None:
    """A tensor's raw bytes as values (NaN, a float's missing value, becomes None; BYTES are 4-byte
    little-endian lengths then UTF-8 bytes, element after element)."""
    if datatype == "BYTES":
        values, pos = [], 0
        while pos < len(chunk) and len(values) <= n:
            if pos + 4 > len(chunk):
                break
            size = int.from_bytes(chunk[pos : pos + 4], "little")
            raw = chunk[pos + 4 : pos + 4 + size]
            if len(raw) != size:
                break
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                errors.append(_bad([*loc, "data", len(values)], "not valid UTF-8"))
                return None
            pos += 4 + size
        if pos != len(chunk) or len(values) != n:
            errors.append(_bad([*loc, "data"], f"binary BYTES data does not hold {n} length-prefixed elements"))
            return None
        return values
    dtype = _BINARY_DTYPES.get(datatype)
    if dtype is None:
        errors.append(_bad([*loc, "datatype"], f"{datatype} has no binary form here"))
        return None
    width = np.dtype(dtype).itemsize
    if len(chunk) != n * width:
        errors.append(
            _bad([*loc, "data"], f"{len(chunk)} binary bytes for {n} {datatype} values ({n * width} expected)")
        )
        return None
    col = np.frombuffer(chunk, dtype=dtype).astype(np.float64)
    return [None if np.isnan(v) else v for v in col.tolist()]


def _parse_outputs(outputs: Any, errors: list) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        errors.append(_bad(["outputs"], "expected a list of {name}"))
        return None
    names = []
    for i, o in enumerate(outputs):
        name = o.get("name") if isinstance(o, dict) else None
        if name not in (OUTPUT_PREDICT, OUTPUT_PROBABILITY):
            errors.append(_bad(["outputs", i], f"unknown output {show(name)}; outputs: predict, probability"[:200]))
            continue
        names.append(name)  # asked for binary_data: answered as JSON all the same (clients read either)
    return names


def error_message(detail: Any) -> str:
    """One line for the protocol's ``{"error": ...}`` from a service error ``detail`` (a string, or the
    list of ``{"loc", "msg"}`` a 422 carries)."""
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(p) for p in e.get("loc") or [])
                parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return str(detail)


def _datatype(values: np.ndarray) -> str:
    return "INT64" if np.issubdtype(values.dtype, np.integer) else "FP64"


def _tensor(name: str, values: np.ndarray) -> dict[str, Any]:
    data = values.reshape(-1).tolist()
    if values.dtype.kind == "f":
        data = [None if not math.isfinite(v) else v for v in data]
    return {"name": name, "datatype": _datatype(values), "shape": list(values.shape), "data": data}


def infer_response(
    model_name: str,
    version: str,
    request_id: str | None,
    labels: np.ndarray,
    probabilities: np.ndarray | None,
    outputs: list[str] | None,
) -> dict[str, Any]:
    """The protocol's inference response: ``model_name``, ``model_version``, ``id`` (when the request had
    one) and the ``outputs`` asked for (all by default)."""
    tensors = {OUTPUT_PREDICT: labels}
    if probabilities is not None:
        tensors[OUTPUT_PROBABILITY] = probabilities
    wanted = [o for o in (outputs or list(tensors)) if o in tensors]
    body: dict[str, Any] = {"model_name": model_name, "model_version": version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [_tensor(name, np.asarray(tensors[name])) for name in wanted]
    return body


def model_metadata(name: str, version: str, task: str, schema: FeatureSchema, classes: int | None) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: the one tensor per feature this service expects, and
    the outputs it answers with (``classes``: K for multiclass)."""
    inputs = [{"name": f, "datatype": "FP64", "shape": [-1]} for f in schema.numeric]
    inputs += [{"name": f, "datatype": "BYTES", "shape": [-1]} for f in schema.categorical]
    outputs = [{"name": OUTPUT_PREDICT, "datatype": "FP64" if task == "regression" else "INT64", "shape": [-1]}]
    if task == "binary":
        outputs.append({"name": OUTPUT_PROBABILITY, "datatype": "FP64", "shape": [-1]})
    elif task == "multiclass":
        outputs.append({"name": OUTPUT_PROBABILITY, "datatype": "FP64", "shape": [-1, classes or -1]})
    return {"name": name, "versions": [version], "platform": f"mlops-ray-{task}", "inputs": inputs, "outputs": outputs}
