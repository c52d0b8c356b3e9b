"""Reading request bodies (``mlops_ray.serve.body``): bounded while they stream, strict about JSON.

Pure: async iterators stand in for ``request.stream()``; no Ray, no server.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import pytest

from mlops_ray.errors import RequestBodyError
from mlops_ray.serve.body import (
    check_content_length,
    check_content_type,
    parse_json,
    read_json_body,
    read_limited,
)
from mlops_ray.serve.schema import NumberOutOfRange

LIMIT = 1_048_576
CHUNK = 64 * 1024


class ChunkedBody:
    """An async chunked upload of ``total`` bytes, made lazily; counts what the reader pulled."""

    def __init__(self, total: int, chunk: int = CHUNK):
        self.total, self.chunk = total, chunk
        self.pulled = 0
        self.closed = False

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        block = b" " * self.chunk
        try:
            while self.pulled < self.total:
                n = min(self.chunk, self.total - self.pulled)
                self.pulled += n
                yield block[:n]
        finally:
            self.closed = True


async def _chunks(*parts: bytes):
    for p in parts:
        yield p


def _read(chunks, limit=LIMIT, **headers):
    return asyncio.run(read_json_body(chunks, limit=limit, **headers))


def _status(fn, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(RequestBodyError) as ei:
        fn(*args, **kwargs)
    return ei.value.status, ei.value.detail


# --------------------------------------------------------------------------- size, while streaming
def test_50mb_chunked_upload_is_refused_after_limit_plus_one_chunk_and_fast():
    body = ChunkedBody(50 * 1024 * 1024)
    t0 = time.perf_counter()
    status, detail = _status(_read, body)  # no Content-Length: a chunked upload
    elapsed = time.perf_counter() - t0
    assert status == 413 and f"limit of {LIMIT} bytes" in detail
    assert body.pulled <= LIMIT + CHUNK  # stopped reading at once: the other ~49 MB were never pulled
    assert elapsed < 1.0, elapsed


def test_read_limited_closes_the_stream_it_stops_reading():
    body = ChunkedBody(10 * LIMIT)
    gen = body.__aiter__()
    with pytest.raises(RequestBodyError):
        asyncio.run(read_limited(gen, LIMIT))
    assert body.closed


def test_body_of_exactly_the_limit_is_read_whole():
    payload = json.dumps({"records": [{"a": "x" * 100}]}).encode()
    padded = payload + b" " * (LIMIT - len(payload))
    parts = [padded[i : i + CHUNK] for i in range(0, len(padded), CHUNK)]
    assert _read(_chunks(*parts)) == {"records": [{"a": "x" * 100}]}
    status, _ = _status(_read, _chunks(*parts, b" "))
    assert status == 413


def test_declared_content_length_over_the_limit_is_refused_before_reading():
    body = ChunkedBody(10)
    status, detail = _status(_read, body, content_length=str(LIMIT + 1))
    assert status == 413 and str(LIMIT + 1) in detail
    assert body.pulled == 0


@pytest.mark.parametrize("value", [None, "", "12", str(LIMIT), "abc", "-1"])
def test_content_length_at_or_under_the_limit_or_unparseable_is_left_to_the_stream(value):
    check_content_length(value, LIMIT)  # no error: the running count still bounds the read


# --------------------------------------------------------------------------- Content-Type
@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/vnd.api+json",
        "application/problem+json; charset=utf8",
    ],
)
def test_json_content_types_are_accepted(value):
    check_content_type(value)


@pytest.mark.parametrize(
    "value",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "text/json",
        "application/jsonx",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
    ],
)
def test_other_content_types_are_415_naming_the_expected_type(value):
    status, detail = _status(check_content_type, value)
    assert status == 415 and "application/json" in detail


def test_content_type_is_checked_before_anything_is_read():
    body = ChunkedBody(10 * LIMIT)
    status, _ = _status(_read, body, content_type="text/plain")
    assert status == 415 and body.pulled == 0


# --------------------------------------------------------------------------- encoding and syntax
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_bodies_are_400(encoding):
    status, detail = _status(parse_json, json.dumps({"records": [{"a": 1}]}).encode(encoding))
    assert status == 400 and "UTF-8" in detail


@pytest.mark.parametrize(
    "body", [b'{"a": "\xff"}', b'{"a": "\xed\xa0\x80"}', b'{"a": "caf\xe9"}'], ids=["ff", "encoded-surrogate", "latin1"]
)
def test_invalid_utf8_is_400_naming_the_byte(body):
    status, detail = _status(parse_json, body)
    assert status == 400 and "not UTF-8" in detail and "position" in detail


@pytest.mark.parametrize(
    "body",
    [b"", b"   ", b"{not json", b'{"a": 1} x', b"\xef\xbb\xbf", b"[1,]", b"{'a': 1}", b"\xef\xbb\xbf\xef\xbb\xbf{}"],
    ids=["empty", "blank", "syntax", "trailing", "bom-only", "trailing-comma", "single-quotes", "two-boms"],
)
def test_malformed_json_is_400(body):
    status, detail = _status(parse_json, body)
    assert status == 400 and detail.startswith("malformed JSON")


@pytest.mark.parametrize("depth", [1025, 5000, 100_000])
def test_nesting_deeper_than_1024_is_400(depth):
    status, detail = _status(parse_json, b"[" * depth + b"]" * depth)
    assert status == 400 and "nested" in detail


def test_nesting_too_deep_in_the_careful_path_is_400_not_recursion_error():
    # NaN sends the body to the standard-library parser, which would hit RecursionError
    body = b'{"x": NaN, "y": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    status, detail = _status(parse_json, body)
    assert status == 400 and "nested" in detail


def test_a_utf8_byte_order_mark_is_ignored():
    assert parse_json(b'\xef\xbb\xbf{"records": []}') == {"records": []}
    assert math.isnan(parse_json(b'\xef\xbb\xbf{"v": NaN}')["v"])  # the careful path too


def test_nesting_up_to_1024_parses():
    assert parse_json(b"[" * 1000 + b"]" * 1000) is not None


# --------------------------------------------------------------------------- values left for validation
def test_valid_json_parses_with_floats_and_ints():
    assert parse_json(b'{"records": [{"a": 1, "b": 2.5, "c": null, "d": "x"}]}') == {
        "records": [{"a": 1, "b": 2.5, "c": None, "d": "x"}]
    }


@pytest.mark.parametrize(
    "literal",
    ["1" + "0" * 400, "1" + "0" * 5000, "-" + "9" * 401, "1e400", "-1e309", "1.5e99999"],
    ids=["401-digits", "5001-digits", "neg-401-digits", "1e400", "-1e309", "huge-exponent"],
)
def test_numbers_beyond_float64_become_number_out_of_range(literal):
    value = parse_json(b'{"v": ' + literal.encode() + b"}")["v"]
    assert value == NumberOutOfRange(literal)
    assert len(repr(value)) < 60


def test_long_integers_within_float_range_parse():
    assert parse_json(("1" + "0" * 305).encode()) == pytest.approx(1e305)
    # beyond 64 bits orjson gives a float: features are float64 anyway
    assert parse_json(b"123456789012345678901234567890") == pytest.approx(1.2345678901234568e29)


@pytest.mark.parametrize(("literal", "check"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
def test_non_standard_constants_parse_for_validation_to_name(literal, check):
    assert str(parse_json(b'{"v": ' + literal.encode() + b"}")["v"]) == check


def test_lone_surrogates_parse_for_validation_to_name():
    assert parse_json(b'{"\\ud800": "\\udfff"}') == {"\ud800": "\udfff"}
    assert parse_json(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a valid pair is fine
