"""Reading a request body as JSON: bounded while it streams, strict about what JSON is (pure; no Ray, no FastAPI).

:func:`read_json_body` is all a route needs: it refuses a Content-Type other than JSON (415)
before reading, a declared ``Content-Length`` over the limit (413) without reading, and stops
reading the stream as soon as the running count passes the limit (413), chunked uploads
included, so a replica never holds more than the limit plus one chunk of a body. Then:

* the body must be UTF-8 (RFC 8259): UTF-16/32 and invalid bytes are a 400, not guessed at
  (a UTF-8 byte order mark is ignored);
* it is parsed with ``orjson`` (about 4x faster than ``json`` on a 100-record body), which
  rejects lone surrogates, NaN, numbers beyond float64 and nesting over 1,024 levels;
* a body ``orjson`` rejects is parsed again, carefully, with the standard library, so that what
  is still JSON-ish reaches validation and comes back as a 422 naming its field (a NaN, a
  ``1e400``, an integer of 5,000 digits, a ``"\\ud800"`` string), and what is not (syntax,
  nesting too deep) is a 400 with the parser's position.

Each failure raises :class:`~mlops_ray.errors.RequestBodyError` with the HTTP status and a
message; nothing here raises anything else for any input.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterable
from contextlib import aclosing, nullcontext
from typing import Any

import orjson

from mlops_ray.errors import RequestBodyError
from mlops_ray.serve.schema import NumberOutOfRange

JSON_MEDIA_TYPE = "application/json"
UTF8_BOM = b"\xef\xbb\xbf"


def check_content_type(value: str | None) -> None:
    """Accept ``application/json`` and ``application/*+json`` (charset, if given, UTF-8), or no header.

    Raises:
        RequestBodyError: 415 naming the expected type.
    """
    if value is None or not value.strip():
        return  # no Content-Type: the body is read as JSON (and must parse as JSON)
    media, _, params = value.partition(";")
    media = media.strip().lower()
    shown = value if len(value) <= 100 else value[:100] + "..."
    if not (media == JSON_MEDIA_TYPE or (media.startswith("application/") and media.endswith("+json"))):
        raise RequestBodyError(415, f"unsupported Content-Type {shown!r}: send the body as {JSON_MEDIA_TYPE} (UTF-8)")
    for param in params.split(";"):
        name, _, charset = param.partition("=")
        if name.strip().lower() == "charset" and charset.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestBodyError(
                415, f"unsupported Content-Type {shown!r}: send {JSON_MEDIA_TYPE} encoded as UTF-8 (charset=utf-8)"
            )


def check_content_length(value: str | None, limit: int) -> None:
    """Refuse a declared body over ``limit`` before reading any of it (413)."""
    if value and value.isdigit() and int(value) > limit:
        raise RequestBodyError(413, f"request body of {value} bytes exceeds the limit of {limit} bytes")


async def read_limited(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """The whole body, or 413 as soon as more than ``limit`` bytes have arrived.

    Stops pulling chunks at once (the rest is never read into memory), so at most
    ``limit`` plus one chunk is held, whatever the transfer encoding.
    """
    parts: list[bytes] = []
    size = 0
    async with aclosing(chunks) if hasattr(chunks, "aclose") else nullcontext():
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise RequestBodyError(
                    413, f"request body exceeds the limit of {limit} bytes (stopped reading at {size} bytes)"
                )
            parts.append(chunk)
    return b"".join(parts)


def _parse_float(text: str):
    v = float(text)
    return v if math.isfinite(v) else NumberOutOfRange(text)


def _parse_int(text: str):
    # Python refuses int() of more than 4300 digits; beyond ~308 digits no float holds the value
    # anyway. Features are float64: a long integer becomes a float, or a NumberOutOfRange.
    if len(text) <= 300:
        return int(text)
    return _parse_float(text)


def parse_json(body: bytes) -> Any:
    """Parse a UTF-8 JSON body; see the module docstring for what is refused and how.

    Raises:
        RequestBodyError: 400 with the reason (not UTF-8, malformed, nested too deeply).
    """
    if body[:3] == UTF8_BOM:  # allowed to be ignored (RFC 8259 8.1), and Python's json.loads(bytes) did
        body = body[3:]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        if "depth limit" in str(err):
            raise RequestBodyError(400, "malformed JSON: nested more than 1024 levels deep") from None
    # The careful path, only for bodies orjson refused.
    if b"\x00" in body[:4]:
        raise RequestBodyError(400, "request body is not UTF-8 (it looks like UTF-16 or UTF-32): send UTF-8 JSON")
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as err:
        raise RequestBodyError(
            400, f"request body is not UTF-8 (invalid byte 0x{body[err.start]:02x} at position {err.start})"
        ) from None
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float)
    except json.JSONDecodeError as err:
        raise RequestBodyError(400, f"malformed JSON: {err}") from None
    except RecursionError:
        raise RequestBodyError(400, "malformed JSON: nested too deeply") from None
    except ValueError as err:  # defensive: no other ValueError is known to escape json.loads
        raise RequestBodyError(400, f"malformed JSON: {err}"[:300]) from None


async def read_json_body(
    chunks: AsyncIterable[bytes],
    *,
    limit: int,
    content_type: str | None = None,
    content_length: str | None = None,
) -> Any:
    """Check the headers, read at most ``limit`` bytes of ``chunks`` and parse them as JSON.

    Args:
        chunks: the body as it streams (``request.stream()``).
        limit: the most bytes accepted (``serve.max_body_bytes``).
        content_type / content_length: the request's headers of those names, if any.

    Raises:
        RequestBodyError: 415, 413 or 400.
    """
    check_content_type(content_type)
    check_content_length(content_length, limit)
    return parse_json(await read_limited(chunks, limit))
