"""The model service over real HTTP on 127.0.0.1, on the session's real local Ray.

One trained+promoted model per module; bounded load only against 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from _cluster import free_port
from _service import FEATURES, raw_config, running_service
from _service import records as _records
from _service import rows as _rows

from mlops_ray.config import TrainingSpec, config_from_dict
from mlops_ray.data.generate import generate_dataset
from mlops_ray.registry import promotion
from mlops_ray.train.run import train_model
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-home")


@pytest.fixture
def workspace(module_home, monkeypatch):
    """Override the per-test workspace: the whole module shares one workspace and MLflow store."""
    monkeypatch.setenv("MLOPS_RAY_HOME", str(module_home))
    return get_workspace()


@pytest.fixture(scope="module")
def service(ray_session, module_home, tmp_path_factory):
    src = tmp_path_factory.mktemp("serve-src")
    generate_dataset(src, 4000, shards=2, seed=3)
    serve = {
        "port": free_port(),
        "poll_interval_s": 1.0,
        "max_body_bytes": 200_000,
        "min_replicas": 1,
        "max_replicas": 3,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 3.0,
        "num_cpus_per_replica": 0.25,
    }
    with running_service(raw_config("serve", src, "serve-model", 40, serve), module_home) as svc:
        yield svc


def test_predict_matches_the_registered_pyfunc(service):
    df = _rows(service["snap"])
    r = httpx.post(f"{service['url']}/predict", json={"records": _records(df)}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    from mlops_ray.registry import tracking

    ctx = service["ctx"]
    served = tracking.alias_version(ctx.client, "serve-model", "champion").version
    expected = tracking.load_pyfunc(ctx.tracking_uri, f"models:/serve-model/{served}").predict(df)
    np.testing.assert_allclose(body["probabilities"], expected["probability"], rtol=1e-6)
    assert body["predictions"] == expected["prediction"].tolist()
    assert body["model"]["name"] == "serve-model" and body["model"]["version"] == str(served) and body["request_id"]


def test_open_inference_protocol_v2_through_tritons_own_http_client(service):
    """Triton's `tritonclient.http`, unmodified: health, model readiness and metadata, inference by name and
    by version with JSON tensors and with the client's default binary tensors, the answers equal to the
    registered pyfunc's on the same rows, and errors in the protocol's shape."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from mlops_ray.data.generate import FEATURE_SPEC
    from mlops_ray.registry import tracking

    ctx, name = service["ctx"], "serve-model"
    version = str(tracking.alias_version(ctx.client, name, "champion").version)
    client = triton.InferenceServerClient(service["url"].removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(name) and client.is_model_ready(name, version)
    assert not client.is_model_ready("no-such-model")
    meta = client.get_model_metadata(name)
    numeric, categorical = FEATURE_SPEC["numeric"], FEATURE_SPEC["categorical"]
    assert [(t["name"], t["datatype"]) for t in meta["inputs"]] == [(f, "FP64") for f in numeric] + [
        (f, "BYTES") for f in categorical
    ]
    assert meta["versions"] == [version] and [o["name"] for o in meta["outputs"]] == ["predict", "probability"]
    df = _rows(service["snap"], 200)[FEATURES].dropna().head(20)  # NaN is not JSON (binary tensors may carry it)
    inputs = []
    for f in numeric:
        t = triton.InferInput(f, [len(df)], "FP64")
        t.set_data_from_numpy(df[f].to_numpy(np.float64), binary_data=False)
        inputs.append(t)
    for f in categorical:
        t = triton.InferInput(f, [len(df)], "BYTES")
        t.set_data_from_numpy(df[f].to_numpy(object), binary_data=False)
        inputs.append(t)
    outputs = [triton.InferRequestedOutput(o, binary_data=False) for o in ("predict", "probability")]
    expected = tracking.load_pyfunc(ctx.tracking_uri, f"models:/{name}/{version}").predict(df)
    for kw in ({}, {"model_version": version}):
        result = client.infer(name, inputs, outputs=outputs, request_id="v2-1", **kw)
        assert result.get_response()["model_version"] == version and result.get_response()["id"] == "v2-1"
        np.testing.assert_allclose(result.as_numpy("probability"), expected["probability"], rtol=1e-6)
        assert result.as_numpy("predict").tolist() == expected["prediction"].tolist()
    # the client's defaults: binary tensors in (the extension), binary outputs asked for (answered as JSON)
    binary = []
    for f in numeric:
        t = triton.InferInput(f, [len(df)], "FP64")
        t.set_data_from_numpy(df[f].to_numpy(np.float64))
        binary.append(t)
    for f in categorical:
        t = triton.InferInput(f, [len(df)], "BYTES")
        t.set_data_from_numpy(df[f].to_numpy(object))
        binary.append(t)
    result = client.infer(name, binary, outputs=[triton.InferRequestedOutput("probability")])
    np.testing.assert_allclose(result.as_numpy("probability"), expected["probability"], rtol=1e-6)
    with pytest.raises(InferenceServerException, match="version '999' is not served"):
        client.infer(name, inputs, model_version="999")
    bad = triton.InferInput("age", [1], "BYTES")
    bad.set_data_from_numpy(np.array(["forty"], dtype=object), binary_data=False)
    with pytest.raises(InferenceServerException, match="inputs.0.age.datatype: numeric feature"):
        client.infer(name, [bad, *inputs[1:]])
    r = httpx.post(f"{service['url']}/v2/models/{name}/infer", json={"inputs": []}, timeout=10)
    assert r.status_code == 422 and set(r.json()) == {"error"}, r.text


def test_invocations_accepts_every_mlflow_format(service):
    df = _rows(service["snap"], 5)
    recs = _records(df)
    payloads = [
        {"dataframe_split": json.loads(df.to_json(orient="split", index=False))},
        {"dataframe_records": recs},
        {"instances": recs},
        {"inputs": recs},
        {"inputs": {c: [r[c] for r in recs] for c in df.columns}},
    ]
    answers = []
    for p in payloads:
        r = httpx.post(f"{service['url']}/invocations", json=p, timeout=30)
        assert r.status_code == 200, (p.keys(), r.text)
        answers.append(r.json()["predictions"])
    assert all(a == answers[0] for a in answers) and set(answers[0][0]) == {"prediction", "probability"}


def test_health_and_model_info(service):
    assert httpx.get(f"{service['url']}/health").json()["status"] == "ok"
    info = httpx.get(f"{service['url']}/model").json()
    assert info["alias"] == "champion" and info["snapshot_id"] == service["snap"].id
    assert set(info["feature_schema"]) == set(FEATURES)
    assert "/predict" in httpx.get(f"{service['url']}/openapi.json").json()["paths"]


def test_bad_payloads_get_clear_4xx_and_service_stays_up(service):
    url = service["url"]
    good = _records(_rows(service["snap"], 1))[0]
    cases = [
        (b"{not json", 400, None),
        (json.dumps({"records": []}), 422, ["records"]),
        (json.dumps({"rows": [good]}), 422, ["body", "records"]),
        (json.dumps({"records": [good], "extra": 1}), 422, ["body", "extra"]),
        (json.dumps({"records": [dict(good, age="old")]}), 422, ["records", 0, "age"]),
        (
            json.dumps({"records": [good, {k: v for k, v in good.items() if k != "income"}]}),
            422,
            ["records", 1, "income"],
        ),
        (json.dumps({"records": [dict(good, shoe_size=42)]}), 422, ["records", 0, "shoe_size"]),
        (json.dumps({"records": [dict(good, region=7)]}), 422, ["records", 0, "region"]),
        (
            '{"records": [' + json.dumps(good).replace('"utilization": ', '"utilization": NaN, "x": ') + "]}",
            422,
            ["records", 0, "utilization"],
        ),
        (json.dumps({"records": ["not an object"]}), 422, ["records", 0]),
        (json.dumps({"records": [good] * 5000}), 413, None),
        (json.dumps([1, 2]), 422, ["body", "records"]),
    ]
    for body, status, loc in cases:
        r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
        assert r.status_code == status, (body[:80], r.status_code, r.text[:300])
        if loc is not None:
            assert loc in [e["loc"] for e in r.json()["detail"]], r.text[:500]
    r = httpx.post(f"{url}/invocations", json={"dataframe_split": {"columns": ["age"], "data": [[1, 2]]}})
    assert r.status_code == 422
    # null values and unseen categories are fine, and the service still answers
    ok = httpx.post(f"{url}/predict", json={"records": [dict(good, income=None, region="atlantis", device=None)]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_concurrent_requests_are_batched_and_answered(service):
    url = service["url"]
    recs = _records(_rows(service["snap"], 32))
    results = []

    def worker(i):
        with httpx.Client(timeout=30) as c:
            for _ in range(10):
                results.append(c.post(f"{url}/predict", json={"records": [recs[i]]}).status_code)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results.count(200) == 160


def test_promotion_switches_versions_with_zero_failed_requests(service, workspace):
    url, cfg, snap, ctx = service["url"], service["cfg"], service["snap"], service["ctx"]
    before = httpx.get(f"{url}/health", timeout=10).json()["model_version"]
    rec = _records(_rows(snap, 1))
    stop = threading.Event()
    seen, failures = [], []

    def traffic():
        with httpx.Client(timeout=30) as c:
            deadline = time.time() + 120
            while not stop.is_set() and time.time() < deadline:
                try:
                    r = c.post(f"{url}/predict", json={"records": rec})
                    if r.status_code != 200:
                        failures.append(r.status_code)
                    else:
                        seen.append(r.json()["model"]["version"])
                except httpx.HTTPError as err:
                    failures.append(repr(err))
                time.sleep(0.01)

    t = threading.Thread(target=traffic)
    t.start()
    try:
        cfg2 = config_from_dict(
            dict(cfg.model_dump(mode="json"), model={"num_boost_round": 60, "params": {"max_depth": 4}})
        )
        v2 = train_model(ctx, TrainingSpec.from_config(cfg2), snap)
        promotion.promote(ctx, cfg2.registry, cfg2.serve.model_alias, v2.version, force=True)
        deadline = time.time() + 60
        while time.time() < deadline and (not seen or seen[-1] != v2.version):
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(30)
    assert failures == []
    assert seen[0] == before and seen[-1] == v2.version != before
    switch = seen.index(v2.version)
    assert all(v == v2.version for v in seen[switch:])  # one replica: no flapping back


def test_autoscaling_scales_up_under_load_and_back_down(service):
    from ray import serve

    from mlops_ray.serve.runner import APP_NAME

    url = service["url"]
    rec = _records(_rows(service["snap"], 1))

    def replicas() -> int:
        dep = serve.status().applications[APP_NAME].deployments["ModelServer"]
        return dep.replica_states.get("RUNNING", 0)

    assert replicas() == 1
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=30) as c:
            deadline = time.time() + 60
            while not stop.is_set() and time.time() < deadline:
                c.post(f"{url}/predict", json={"records": rec * 20})

    threads = [threading.Thread(target=load) for _ in range(24)]
    for t in threads:
        t.start()
    peak = 1
    try:
        deadline = time.time() + 45
        while time.time() < deadline and peak < 2:
            peak = max(peak, replicas())
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert peak >= 2, "no upscale under load"
    deadline = time.time() + 60
    while time.time() < deadline and replicas() > 1:
        time.sleep(1)
    assert replicas() == 1, "no downscale after load stopped"


def test_batch_predict_equals_http(service, tmp_path):
    from mlops_ray.batch.predict import predict_files

    snap, cfg = service["snap"], service["cfg"]
    manifest = predict_files(service["ctx"], cfg, str(snap.split_dir("test")), str(tmp_path / "out"))
    out = pd.read_parquet(tmp_path / "out").set_index("customer_id")
    raw = pd.concat(pd.read_parquet(f) for f in snap.split_files("test")).set_index("customer_id")
    assert manifest["rows"] == len(raw) == len(out)
    version = manifest["model"]["version"]
    assert set(out["model_version"]) == {version}
    sample = raw.head(25)
    r = httpx.post(f"{service['url']}/predict", json={"records": _records(sample[FEATURES])}, timeout=30)
    assert r.json()["model"]["version"] == version
    np.testing.assert_allclose(out.loc[sample.index, "probability"], r.json()["probabilities"], rtol=1e-6)
    from mlops_ray.data.split_files import fingerprint_source

    assert manifest["input_fingerprint"] == fingerprint_source(str(snap.split_dir("test")))[0]
