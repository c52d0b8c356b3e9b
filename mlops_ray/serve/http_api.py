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
from mlops_ray.serve.body import read_json_body
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

# Per route: how to get the records out of the body, and the `loc` prefix of their errors.
ROUTE_INPUTS: dict[str, tuple[Callable[[Any], Any], tuple[str, ...]]] = {
    "/predict": (predict_payload_to_records, ("records",)),
    "/invocations": (lambda body: mlflow_payload_to_records(body)[0], ("rows",)),
}


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


def client_error_response(
    err: RequestBodyError | RequestError, request_id: str | None = None, echo_id: bool = False
) -> JSONResponse:
    if isinstance(err, RequestBodyError):
        return error_response(err.status, err.detail, request_id=request_id, echo_id=echo_id)
    return error_response(422, err.errors, request_id=request_id, echo_id=echo_id)


def parse_scoring_body(route: str, body: Any, schema: FeatureSchema) -> pa.Table:
    """A parsed JSON body of ``route`` -> the feature table (raises :class:`RequestError`, 422)."""
    extract, loc = ROUTE_INPUTS[route]
    return records_to_table(extract(body), schema, loc=loc)


async def read_scoring_request(request: Request, route: str, schema: FeatureSchema, limit: int) -> pa.Table:
    """Read, bound, parse and validate the body of a scoring request.

    Raises:
        RequestBodyError: 400/413/415; RequestError: 422; starlette's ClientDisconnect.
    """
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


@dataclass
class Scored:
    """The outcome of :func:`handle_scoring`: an error ``response``, or ``model`` and ``scores``."""

    status: int
    request_id: str
    response: Response | None = None
    model: Any = None
    scores: Any = None
    rows: int = 0


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
) -> Scored:
    """The whole request path of ``route`` short of the metrics: never raises for any request.

    Args:
        model: the loaded model (``schema``, ``transform``, ``feature_names``), or None (503).
        limit: the body size limit in bytes.
        score: ``await score(model, x)`` -> scores for the preprocessed matrix ``x``.
    """
    rid, given = request_id(request)
    echo = not given
    try:
        if model is None:
            return Scored(503, rid, error_response(503, unavailable, request_id=rid, echo_id=echo))
        table = await read_scoring_request(request, route, model.schema, limit)
        with np.errstate(over="ignore"):  # an overflow to inf is reported by check_finite
            x = model.transform(table)
        check_finite(x, model.feature_names, ROUTE_INPUTS[route][1])
        scores = await score(model, x)
        return Scored(200, rid, model=model, scores=scores, rows=len(x))
    except (RequestBodyError, RequestError) as err:
        response = client_error_response(err, rid, echo_id=echo)
        return Scored(response.status_code, rid, response)
    except ClientDisconnect:  # the client left mid-upload: nobody to answer, nothing to log
        return Scored(CLIENT_CLOSED, rid, Response(status_code=CLIENT_CLOSED))
    except Exception as err:  # never a traceback to the client, nor one per request to the log
        return Scored(500, rid, internal_error_response(err, route, rid, limiter, logger, echo_id=echo))
