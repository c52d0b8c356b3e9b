"""The HTTP side of the scoring routes, without Ray: request ids, reading and validating a scoring
request, and JSON error responses that always serialise.

:mod:`mlops_ray.serve.app` answers every scoring request with :func:`handle_scoring`; the unit tests
call the same function from a small FastAPI app, so the whole request path (with a stand-in model)
is tested without a cluster.

Statuses: 400 (not JSON, not UTF-8), 413 (body over the limit, counted while it streams), 415
(Content-Type not JSON), 422 (JSON that does not fit the model: one entry per bad field), 500
(a bug: one log line with the request id, rate-limited; the id is in the body too).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from mlops_ray.errors import RequestBodyError, RequestError
from mlops_ray.serve.body import check_content_length, parse_json, read_json_body, read_limited
from mlops_ray.serve.errorlog import ErrorLogLimiter, one_line
from mlops_ray.serve.schema import (
    FeatureSchema,
    check_finite,
    json_safe,
    mlflow_payload_to_records,
    predict_payload_to_records,
    records_to_table,
)

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CLIENT_CLOSED = 499  # the client went away before its body was read (nginx's code; never sent)

V2_INFER = "/v2/infer"  # the route name (metrics, logs) of every Open Inference Protocol infer path
V2_BINARY_HEADER = "inference-header-content-length"  # V2's binary tensor extension

# Per route: how to get the records out of the body, and the `loc` prefix of their errors.
ROUTE_INPUTS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "/predict": (predict_payload_to_records, ("records",)),
    "/invocations": (lambda body: mlflow_payload_to_records(body)[0], ("rows",)),
}
ROUTE_LOC = {**{route: loc for route, (_, loc) in ROUTE_INPUTS.items()}, V2_INFER: ("inputs",)}


def request_id(request: Request) -> tuple[str, bool]:
    """(id, whether the request brought it). Ray Serve's ingress gives every request an
    ``x-request-id`` (the client's, or a new one) and echoes it on the response; without one
    (tests, another server) a new id is made here and the error responses echo it."""
    given = request.headers.get(REQUEST_ID_HEADER)
    if given and _REQUEST_ID.fullmatch(given):
        return given, True
    return uuid.uuid4().hex, False


def error_response(status: int, detail: Any, *, request_id: str | None = None, echo_id: bool = False) -> JSONResponse:
    """``{"detail": ...}`` (plus ``request_id``), serialisable whatever the client sent.

    A 413 does not ask to close the connection: the server discards the rest of the body (no
    memory), and a client still uploading reads its 413 intact. With ``Connection: close`` the
    replica's reset reached clients through HAProxy as a truncated or broken response (measured:
    4 of 90 uploads of 10-50 MB with httpx and requests).
    """
    content: dict[str, Any] = {"detail": json_safe(detail)}
    headers: dict[str, str] = {}
    if request_id is not None:
        content["request_id"] = request_id
        if echo_id:
            headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(status_code=status, content=content, headers=headers)


def v2_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An Open Inference Protocol error: ``{"error": "<message>"}``."""
    return JSONResponse(status_code=status, content={"error": json_safe(message)}, headers=headers)


def v2_error_from(response: Response) -> Response:
    """A service error response (``{"detail": ...}``) in the protocol's shape, same status and request id."""
    import json

    from mlops_ray.serve.v2 import error_message

    if response.status_code == CLIENT_CLOSED or not response.body:
        return response
    detail = json.loads(response.body).get("detail")
    headers = {k: v for k, v in response.headers.items() if k == REQUEST_ID_HEADER}
    return v2_error(response.status_code, error_message(detail), headers)


def client_error_response(
    err: RequestBodyError | RequestError, request_id: str | None = None, echo_id: bool = False
) -> JSONResponse:
    if isinstance(err, RequestBodyError):
        return error_response(err.status, err.detail, request_id=request_id, echo_id=echo_id)
    return error_response(422, err.errors, request_id=request_id, echo_id=echo_id)


def parse_scoring_body(
    route: str, body: Any, schema: FeatureSchema, binary: bytes | None = None
) -> tuple[pa.Table, Any]:
    """A parsed JSON body of ``route`` -> (the feature table, what else the route needs: for
    :data:`V2_INFER` the request's ``id`` and the outputs asked for; ``binary``: its binary tensor
    data). Raises :class:`RequestError` (422)."""
    if route == V2_INFER:
        from mlops_ray.serve.v2 import parse_infer_request

        table, rid, outputs = parse_infer_request(body, schema, binary)
        return table, (rid, outputs)
    extract, loc = ROUTE_INPUTS[route]
    return records_to_table(extract(body), schema, loc=loc), None


async def read_scoring_request(request: Request, route: str, schema: FeatureSchema, limit: int) -> tuple[pa.Table, Any]:
    """Read, bound, parse and validate the body of a scoring request (see :func:`parse_scoring_body`).

    Raises:
        RequestBodyError: 400/413/415; RequestError: 422; starlette's ClientDisconnect.
    """
    header_length = request.headers.get(V2_BINARY_HEADER) if route == V2_INFER else None
    if header_length is not None:  # V2's binary tensor extension: a JSON header, then raw tensor bytes
        check_content_length(request.headers.get("content-length"), limit)
        raw = await read_limited(request.stream(), limit)
        try:
            size = int(header_length)
        except ValueError:
            size = -1
        if not 0 < size <= len(raw):
            raise RequestBodyError(400, f"{V2_BINARY_HEADER} {header_length!r} is not a length within the body")
        return parse_scoring_body(route, parse_json(raw[:size]), schema, raw[size:])
    body = await read_json_body(
        request.stream(),
        limit=limit,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
    )
    return parse_scoring_body(route, body, schema)


def internal_error_response(
    err: BaseException,
    route: str,
    request_id: str,
    limiter: ErrorLogLimiter,
    logger: logging.Logger,
    echo_id: bool = False,
) -> JSONResponse:
    """500 naming the request id; logs one line (rate-limited), a traceback once per exception type."""
    kind = type(err).__name__
    decision = limiter.decide(kind)
    if decision.line:
        suppressed = f" [{decision.suppressed} similar errors not logged]" if decision.suppressed else ""
        logger.error(
            "request %s on %s failed: %s: %s%s",
            request_id,
            route,
            kind,
            one_line(str(err)),
            suppressed,
            exc_info=err if decision.traceback else None,
        )
    return error_response(
        500, f"internal error ({kind}); request id {request_id}", request_id=request_id, echo_id=echo_id
    )


def parse_feedback(body: Any, task: str | None) -> list[dict[str, Any]]:
    """A ``POST /feedback`` body -> ``[{"request_id", "record", "label"}]`` (raises RequestError, 422).

    Labels must be finite numbers; for classification, whole non-negative numbers (binary: 0 or 1).
    """
    from mlops_ray.serve.schema import MAX_FEEDBACK_ITEMS

    def bad(loc, msg):
        return {"loc": list(loc), "msg": msg}

    if not isinstance(body, dict) or "labels" not in body:
        raise RequestError([bad(("labels",), "required: a list of {request_id, record, label}")])
    extra = [k for k in body if k != "labels"]
    errors = [bad((k,), "unknown field") for k in extra[:5]]
    items = body["labels"]
    if not isinstance(items, list) or not items:
        raise RequestError([*errors, bad(("labels",), "must be a non-empty list")])
    if len(items) > MAX_FEEDBACK_ITEMS:
        raise RequestError([bad(("labels",), f"at most {MAX_FEEDBACK_ITEMS} items per request")])
    out = []
    for i, item in enumerate(items):
        loc = ("labels", i)
        if not isinstance(item, dict):
            errors.append(bad(loc, "must be an object"))
            continue
        for k in item:
            if k not in ("request_id", "record", "label"):
                errors.append(bad((*loc, str(k)[:64]), "unknown field"))
        rid = item.get("request_id")
        if not isinstance(rid, str) or not _REQUEST_ID.fullmatch(rid):
            errors.append(bad((*loc, "request_id"), "required: the request id of the scored request"))
        rec = item.get("record", 0)
        if isinstance(rec, bool) or not isinstance(rec, int) or not 0 <= rec < 2**31:
            errors.append(bad((*loc, "record"), "must be a non-negative integer"))
        label = item.get("label")
        ok = isinstance(label, (int, float)) and not isinstance(label, bool)
        try:
            ok = ok and bool(np.isfinite(float(label)))
        except OverflowError:  # an integer of hundreds of digits
            ok = False
        if ok and task in ("binary", "multiclass"):
            ok = float(label).is_integer() and label >= 0 and (task != "binary" or label in (0, 1))
        if not ok:
            want = {"binary": "0 or 1", "multiclass": "a class index (0..k-1)"}.get(task, "a finite number")
            errors.append(bad((*loc, "label"), f"must be {want}"))
            continue
        out.append({"request_id": rid, "record": rec, "label": label})
    if errors:
        raise RequestError(errors)
    return out


@dataclass
class Scored:
    """The outcome of :func:`handle_scoring`: an error ``response``, or ``model`` and ``scores``."""

    status: int
    request_id: str
    response: Response | None = None
    model: Any = None
    scores: Any = None
    rows: int = 0
    extra: Any = None  # what the route's parser returned besides the table (V2: request id, outputs)


async def handle_scoring(
    request: Request,
    route: str,
    model: Any,
    *,
    limit: int,
    score: Callable[[Any, np.ndarray], Awaitable[Any]],
    limiter: ErrorLogLimiter,
    logger: logging.Logger,
    unavailable: str = "no model loaded",
    observe: Callable[[Any, pa.Table, Any, str], None] | None = None,
) -> Scored:
    """The whole request path of ``route`` short of the metrics: never raises for any request.

    Args:
        model: the loaded model (``schema``, ``transform``, ``feature_names``), or None (503).
        limit: the body size limit in bytes.
        score: ``await score(model, x)`` -> scores for the preprocessed matrix ``x``.
        observe: ``observe(model, table, scores, request_id)`` after a request is scored (drift
            monitoring); an error in it is logged and never fails the request.
    """
    rid, given = request_id(request)
    echo = not given
    try:
        if model is None:
            return Scored(503, rid, error_response(503, unavailable, request_id=rid, echo_id=echo))
        table, extra = await read_scoring_request(request, route, model.schema, limit)
        with np.errstate(over="ignore"):  # an overflow to inf is reported by check_finite
            x = model.transform(table)
        check_finite(x, model.feature_names, ROUTE_LOC[route])
        scores = await score(model, x)
        if observe is not None:
            try:
                observe(model, table, scores, rid)
            except Exception as err:  # monitoring never fails a request
                decision = limiter.decide("observe:" + type(err).__name__)
                if decision.line:
                    logger.warning("drift observation failed: %s: %s", type(err).__name__, one_line(str(err)))
        return Scored(200, rid, model=model, scores=scores, rows=len(x), extra=extra)
    except (RequestBodyError, RequestError) as err:
        response = client_error_response(err, rid, echo_id=echo)
        return Scored(response.status_code, rid, response)
    except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log
        return Scored(CLIENT_CLOSED, rid, Response(status_code=CLIENT_CLOSED))
    except Exception as err:  # never a traceback to the client, nor one per request to the log
        return Scored(500, rid, internal_error_response(err, route, rid, limiter, logger, echo_id=echo))
