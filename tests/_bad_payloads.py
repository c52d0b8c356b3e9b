"""A catalogue of hostile and broken request bodies for the scoring routes, with the answer each must get.

Shared by the unit test (``tests/unit/test_serve_requests.py``: the request path on a small FastAPI app,
no Ray) and the e2e test (``tests/e2e/test_serve_hardening.py``: the real service). Each of these
gave a 500, or was accepted though it is not JSON, before issue 8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    route: str
    body: bytes
    status: int
    loc: list | None = None  # a `loc` the 422 must name
    detail: str | None = None  # a fragment the (400/413/415) `detail` must contain
    content_type: str | None = "application/json"


def _deep(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def _record_json(good: dict, field: str, raw_value: str) -> str:
    """A records body whose ``field`` holds ``raw_value`` verbatim (JSON text json.dumps cannot write)."""
    marker = "__RAW_VALUE__"
    return json.dumps({"records": [dict(good, **{field: marker})]}).replace(f'"{marker}"', raw_value)


def catalogue(good: dict, num: str, cat: str, limit: int) -> list[Case]:
    """Cases for a model with numeric feature ``num`` and categorical ``cat``; ``good`` is a valid record."""
    predict = "/predict"
    inv = "/invocations"
    rec = ["records", 0]
    cases = [
        # numbers beyond float64 / beyond Python's 4300-digit int limit
        Case("int-401-digits", predict, _record_json(good, num, "1" + "0" * 400).encode(), 422, [*rec, num]),
        Case("int-5001-digits", predict, _record_json(good, num, "1" + "0" * 5000).encode(), 422, [*rec, num]),
        Case("neg-int-401-digits", predict, _record_json(good, num, "-" + "9" * 401).encode(), 422, [*rec, num]),
        Case("float-1e400", predict, _record_json(good, num, "1e400").encode(), 422, [*rec, num]),
        Case(
            "int-5001-digits-as-category", predict, _record_json(good, cat, "1" + "0" * 5000).encode(), 422, [*rec, cat]
        ),
        Case("nan", predict, _record_json(good, num, "NaN").encode(), 422, [*rec, num]),
        Case("infinity", predict, _record_json(good, num, "-Infinity").encode(), 422, [*rec, num]),
        # finite, but too large for the model's float32 matrix after preprocessing
        Case("float-1e300", predict, _record_json(good, num, "1e300").encode(), 422, [*rec, num]),
        # lone surrogates: as a value, as a key (whose 422 must still serialise), in an MLflow payload
        Case("surrogate-category", predict, _record_json(good, cat, '"\\ud800"').encode(), 422, [*rec, cat]),
        Case("surrogate-number", predict, _record_json(good, num, '"\\udfff"').encode(), 422, [*rec, num]),
        Case(
            "surrogate-key",
            predict,
            json.dumps({"records": [good]})[:-3].encode() + b', "\\ud800": 1}]}',
            422,
            [*rec, "\\ud800"],
        ),
        Case(
            "surrogate-top-level-key",
            predict,
            b'{"records": [], "\\udbff": 1}',
            422,
            ["body", "\\udbff"],
        ),
        Case(
            "surrogate-inputs-column",
            inv,
            b'{"inputs": {"\\ud800": [1]}}',
            422,
            ["rows", 0, "\\ud800"],
        ),
        # deep nesting: the whole body, a value, an MLflow payload; past orjson's 1024 levels
        Case("deep-1000-body", predict, _deep(1000).encode(), 422, ["body", "records"]),
        Case("deep-1000-value", predict, _record_json(good, num, _deep(1000)).encode(), 422, [*rec, num]),
        Case("deep-1000-category", predict, _record_json(good, cat, _deep(1000)).encode(), 422, [*rec, cat]),
        Case("deep-1000-invocations", inv, _deep(1000).encode(), 422, ["body"]),
        Case(
            "deep-1000-inputs",
            inv,
            ('{"inputs": [' + _record_json(good, num, _deep(1000))[len('{"records": [') :]).encode(),
            422,
            ["rows", 0, num],
        ),
        Case("deep-20000-body", predict, _deep(20_000).encode(), 400, detail="nested"),
        Case("deep-20000-invocations", inv, _deep(20_000).encode(), 400, detail="nested"),
        Case(
            "deep-3000-with-nan", predict, ('{"x": NaN, "records": ' + _deep(3000) + "}").encode(), 400, detail="nested"
        ),
        # dataframe_split column names: not strings, duplicated
        Case(
            "split-list-column",
            inv,
            json.dumps({"dataframe_split": {"columns": [[num]], "data": [[1]]}}).encode(),
            422,
            ["dataframe_split", "columns", 0],
        ),
        Case(
            "split-null-column",
            inv,
            json.dumps({"dataframe_split": {"columns": [None], "data": [[1]]}}).encode(),
            422,
            ["dataframe_split", "columns", 0],
        ),
        Case(
            "split-duplicate-column",
            inv,
            json.dumps({"dataframe_split": {"columns": [*good, num], "data": [[*good.values(), 1]]}}).encode(),
            422,
            ["dataframe_split", "columns", len(good)],
            detail=num,
        ),
        # not JSON: other content types, other encodings, broken bytes, nothing
        Case(
            "text-plain",
            predict,
            json.dumps({"records": [good]}).encode(),
            415,
            detail="application/json",
            content_type="text/plain",
        ),
        Case(
            "form-urlencoded",
            inv,
            json.dumps({"instances": [good]}).encode(),
            415,
            detail="application/json",
            content_type="application/x-www-form-urlencoded",
        ),
        Case(
            "json-utf16-charset",
            predict,
            json.dumps({"records": [good]}).encode("utf-16"),
            415,
            detail="UTF-8",
            content_type="application/json; charset=utf-16",
        ),
        Case("utf16-bom", predict, json.dumps({"records": [good]}).encode("utf-16"), 400, detail="UTF-8"),
        Case("utf16-le", inv, json.dumps({"instances": [good]}).encode("utf-16-le"), 400, detail="UTF-8"),
        Case("utf32", predict, json.dumps({"records": [good]}).encode("utf-32"), 400, detail="UTF-8"),
        Case("invalid-utf8", predict, _record_json(good, cat, '"\xff"').encode("latin-1"), 400, detail="UTF-8"),
        Case("encoded-surrogate", predict, b'{"records": [{"a": "\xed\xa0\x80"}]}', 400, detail="UTF-8"),
        Case("utf8-bom-then-garbage", predict, b"\xef\xbb\xbf{not json", 400, detail="malformed JSON"),
        Case("empty", predict, b"", 400, detail="malformed JSON"),
        Case("null", inv, b"null", 422, ["body"]),
        Case("truncated", predict, json.dumps({"records": [good]}).encode()[:-3], 400, detail="malformed JSON"),
        Case("binary", predict, bytes(range(256)), 400, detail="UTF-8"),
        # too large (declared): the size limit itself
        Case("too-large", predict, json.dumps({"records": [good] * (limit // 100)}).encode(), 413, detail="limit"),
    ]
    return cases
