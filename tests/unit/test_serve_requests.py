"""The scoring request path (``mlops_ray.serve.http_api.handle_scoring``) over HTTP, without Ray.

A small FastAPI app (``tests/_scoring_app.py``) routes ``/predict`` and ``/invocations`` through
the same function the Ray Serve replica uses, with a stand-in model (a real fitted-style
Preprocessor, a trivial scorer), and Starlette's TestClient drives it: the catalogue of hostile bodies
(``tests/_bad_payloads.py``, also run against the real service in the e2e tier), the size
limit on chunked uploads, request ids on 500s and the rate-limited error log. Schema fuzzing of
the same app is slow: ``tests/integration/test_serve_requests_fuzz.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx
import pytest
from _bad_payloads import Case, catalogue
from _scoring_app import BOOM, GOOD, LIMIT, make_app
from fastapi.testclient import TestClient

from mlops_ray.serve.http_api import REQUEST_ID_HEADER
from mlops_ray.serve.schema import INVOCATIONS_REQUEST_SCHEMA, PREDICT_REQUEST_SCHEMA


@pytest.fixture(scope="module")
def client():
    with TestClient(make_app(), raise_server_exceptions=True) as c:
        yield c


def _post(client, case: Case):
    headers = {"content-type": case.content_type} if case.content_type else {}
    return client.post(case.route, content=case.body, headers=headers)


CASES = catalogue(GOOD, num="income", cat="region", limit=LIMIT)


# --------------------------------------------------------------------------- the catalogue
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_payload_gets_its_4xx_naming_the_problem(client, case):
    r = _post(client, case)
    assert r.status_code == case.status, (case.id, r.status_code, r.text[:300])
    assert r.headers["content-type"] == "application/json"
    body = r.json()  # always a JSON body, whatever was sent
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # and one that re-serialises as UTF-8
    if case.loc is not None:
        assert case.loc in [e["loc"] for e in body["detail"]], (case.id, body)
    if case.detail is not None:
        text = body["detail"] if isinstance(body["detail"], str) else json.dumps(body["detail"])
        assert case.detail in text, (case.id, body)


def test_service_still_answers_after_the_whole_catalogue(client):
    for case in CASES:
        assert _post(client, case).status_code < 500, case.id
    for route, body in (("/predict", {"records": [GOOD]}), ("/invocations", {"instances": [GOOD, GOOD]})):
        r = client.post(route, json=body)
        assert r.status_code == 200, r.text
        assert len(r.json()["scores"]) == len(next(iter(body.values())))


def test_catalogue_size():
    assert len(CASES) >= 35  # the figure the README quotes


# --------------------------------------------------------------------------- size, while streaming
def test_chunked_upload_over_the_limit_is_413_without_reading_it_all():
    sent = []

    async def chunks():  # 50 MB made lazily; no Content-Length, so it goes chunked
        yield b'{"records": ['
        for _ in range(50 * 1024 * 1024 // 65536):
            sent.append(65536)
            yield b" " * 65536

    async def post():
        # httpx's ASGI transport pulls the body chunk by chunk as the app asks for it
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post("/predict", content=chunks(), headers={"content-type": "application/json"})

    t0 = time.perf_counter()
    r = asyncio.run(post())
    assert r.status_code == 413 and f"limit of {LIMIT} bytes" in r.json()["detail"]
    assert sum(sent) <= LIMIT + 65536, sum(sent)  # the app stopped asking after limit + one chunk
    assert time.perf_counter() - t0 < 2.0


def test_valid_chunked_upload_under_the_limit_is_scored(client):
    data = json.dumps({"records": [GOOD] * 3}).encode()

    def chunks():
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["scores"]) == 3


def test_missing_content_type_is_read_as_json(client):
    r = client.post("/predict", content=json.dumps({"records": [GOOD]}).encode())
    assert r.status_code == 200


def test_no_model_is_503():
    with TestClient(make_app(model=None)) as c:
        r = c.post("/predict", json={"records": [GOOD]})
    assert r.status_code == 503 and r.json()["detail"] == "no model loaded"


# --------------------------------------------------------------------------- 500: request id, one log line
def test_500_names_its_request_id_in_body_and_header(caplog):
    with TestClient(make_app()) as c, caplog.at_level(logging.ERROR, "mlops_ray.serve"):
        r = c.post("/predict", json={"records": [dict(GOOD, age=BOOM)]})
        assert r.status_code == 500
        rid = r.json()["request_id"]
        assert r.headers[REQUEST_ID_HEADER] == rid and rid in r.json()["detail"]
        assert "ZeroDivisionError" in r.json()["detail"] and "Traceback" not in r.text
        # a client-chosen id is used (Ray Serve's ingress echoes it on the response itself)
        r = c.post("/predict", json={"records": [dict(GOOD, age=BOOM)]}, headers={REQUEST_ID_HEADER: "abc-123"})
        assert r.status_code == 500 and r.json()["request_id"] == "abc-123"
        # one that could forge log lines is not
        r = c.post("/predict", json={"records": [dict(GOOD, age=BOOM)]}, headers={REQUEST_ID_HEADER: "x\ty z"})
        assert r.json()["request_id"] != "x\ty z"
    assert rid in caplog.text


def test_a_flood_of_500s_logs_a_few_lines_and_one_traceback(caplog):
    with TestClient(make_app()) as c, caplog.at_level(logging.ERROR, "mlops_ray.serve"):
        statuses = [c.post("/predict", json={"records": [dict(GOOD, age=BOOM)]}).status_code for _ in range(200)]
    assert statuses == [500] * 200
    records = [r for r in caplog.records if r.name == "mlops_ray.serve"]
    assert 1 <= len(records) <= 5, len(records)  # 200 requests in well under 5 s: about one line a second
    assert sum(r.exc_info is not None for r in records) == 1  # the traceback, once for this exception type
    assert all("\n" not in r.getMessage() for r in records)
    assert "ZeroDivisionError: scoring bug" in records[0].getMessage()


# --------------------------------------------------------------------------- OpenAPI + fuzzing
def test_real_app_declares_json_request_bodies_for_both_scoring_routes():
    from mlops_ray.serve.app import api  # imports Ray Serve (no cluster is started)

    paths = api.openapi()["paths"]
    for route, schema in (("/predict", PREDICT_REQUEST_SCHEMA), ("/invocations", INVOCATIONS_REQUEST_SCHEMA)):
        body = paths[route]["post"]["requestBody"]
        assert body["required"] is True
        assert body["content"]["application/json"]["schema"] == schema


def test_behind_ray_serves_request_id_middleware_the_500_carries_one_matching_id():
    """Under Ray Serve every request reaches the app with an ``x-request-id`` (RequestIdMiddleware, which
    also echoes it on the response): the 500's body names that id and the header is not doubled."""
    from ray.serve._private.http_util import RequestIdMiddleware  # an import only: no cluster

    c = TestClient(RequestIdMiddleware(make_app()))  # no `with`: no lifespan events (Serve runs without them)
    r = c.post("/predict", json={"records": [dict(GOOD, age=BOOM)]})
    assert r.status_code == 500
    assert r.headers.get_list(REQUEST_ID_HEADER) == [r.json()["request_id"]]
    r = c.post("/predict", json={"records": [GOOD]})
    assert r.status_code == 200 and r.headers.get_list(REQUEST_ID_HEADER) == [r.json()["request_id"]]
    r = c.post("/predict", content=b"{", headers={REQUEST_ID_HEADER: "client-id-1"})
    assert r.status_code == 400 and r.headers.get_list(REQUEST_ID_HEADER) == ["client-id-1"]


# --------------------------------------------------------------------------- Open Inference Protocol V2
def _v2_body(rows: list[dict]) -> dict:
    from _scoring_app import CATEGORICAL, NUMERIC

    n = len(rows)
    inputs = [{"name": f, "shape": [n], "datatype": "FP64", "data": [r[f] for r in rows]} for f in NUMERIC]
    inputs += [{"name": f, "shape": [n], "datatype": "BYTES", "data": [r[f] for r in rows]} for f in CATEGORICAL]
    return {"id": "q-1", "inputs": inputs}


def test_v2_infer_scores_like_predict_and_echoes_the_id(client):
    rows = [GOOD, {**GOOD, "income": None, "region": "zzz"}]
    v2 = client.post("/v2/models/stand-in/infer", json=_v2_body(rows))
    assert v2.status_code == 200, v2.text
    body = v2.json()
    assert body["id"] == "q-1" and body["model_name"] == "stand-in" and body["model_version"] == "1"
    (out,) = body["outputs"]
    plain = client.post("/predict", json={"records": rows}).json()["scores"]
    assert out["name"] == "predict" and out["shape"] == [2] and out["data"] == plain


@pytest.mark.parametrize(
    ("mutate", "status", "words"),
    [
        (lambda b: b["inputs"][0].update(data=["forty"]), 422, "inputs.0.age.data.0: expected a number"),
        (lambda b: b["inputs"].pop(), 422, "missing input"),
        (lambda b: b.pop("inputs"), 422, "inputs: required"),
    ],
)
def test_v2_errors_use_the_protocols_shape_naming_the_tensor(client, mutate, status, words):
    body = _v2_body([GOOD])
    mutate(body)
    r = client.post("/v2/models/stand-in/infer", json=body)
    assert r.status_code == status and set(r.json()) == {"error"} and words in r.json()["error"], r.text


def test_v2_body_errors_keep_their_status_in_the_protocols_shape(client):
    r = client.post("/v2/models/stand-in/infer", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and set(r.json()) == {"error"}
    r = client.post("/v2/models/stand-in/infer", content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and set(r.json()) == {"error"}
    big = b'{"inputs": [' + b" " * (LIMIT + 10) + b"]}"
    r = client.post("/v2/models/stand-in/infer", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and set(r.json()) == {"error"}


def _triton_request(rows: list[dict], binary: bool):
    """A request body as Triton's own client builds it (its default: binary tensors)."""
    import numpy as np
    import tritonclient.http as triton
    from _scoring_app import CATEGORICAL, NUMERIC

    inputs = []
    for f in NUMERIC:
        t = triton.InferInput(f, [len(rows)], "FP64")
        t.set_data_from_numpy(
            np.array([np.nan if r[f] is None else r[f] for r in rows], np.float64), binary_data=binary
        )
        inputs.append(t)
    for f in CATEGORICAL:
        t = triton.InferInput(f, [len(rows)], "BYTES")
        t.set_data_from_numpy(np.array([r[f] for r in rows], dtype=object), binary_data=binary)
        inputs.append(t)
    outputs = [triton.InferRequestedOutput("predict")]  # binary_data=True by default
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs, request_id="t-2")
    headers = {} if json_size is None else {"Inference-Header-Content-Length": str(json_size)}
    return body, headers


def test_v2_binary_tensors_from_tritonclient_score_like_json_and_nan_is_missing(client):
    import tritonclient.http as triton

    rows = [GOOD, {**GOOD, "income": None, "region": "zzz"}]
    body, headers = _triton_request(rows, binary=True)
    assert headers, "tritonclient built no binary request"
    r = client.post("/v2/models/stand-in/infer", content=body, headers=headers)
    assert r.status_code == 200, r.text
    result = triton.InferResult.from_response_body(r.content)  # the client's own reading of the answer
    plain = client.post("/predict", json={"records": rows}).json()["scores"]
    assert result.as_numpy("predict").tolist() == plain and result.get_response()["id"] == "t-2"


@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (lambda body, n: (body[:-3], n), "tensors declare"),  # fewer bytes than the tensors announce
        (lambda body, n: (body, str(len(body) + 5)), "not a length within the body"),
        (lambda body, n: (body, "x"), "not a length within the body"),
    ],
)
def test_v2_broken_binary_bodies_are_clear_errors(client, cut, words):
    body, headers = _triton_request([GOOD], binary=True)
    body, size = cut(body, headers["Inference-Header-Content-Length"])
    r = client.post("/v2/models/stand-in/infer", content=body, headers={"Inference-Header-Content-Length": size})
    assert 400 <= r.status_code < 500 and words in r.json()["error"], r.text
