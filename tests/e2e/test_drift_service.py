"""Live drift monitoring in the real service (real Ray, real HTTP on 127.0.0.1, real Prometheus).

One trained+promoted model, two replicas, traffic from fresh generated rows (same generator,
other seed) and drifted rows (``generate --drift``); bounded request counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _cluster import free_port
from _service import FEATURES, raw_config, records, running_service

from mlops_ray.data.generate import generate_dataset
from mlops_ray.drift.reference import DriftReference, evaluate, limits_of
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DRIFT = {
    "window_rows": 1000,
    "min_rows": 500,
    "window_s": 120,
    "push_every_rows": 100,
    "push_interval_s": 0.3,
    "checkpoint_interval_s": 0.3,
    "feedback_min_rows": 60,
    "sample_rows_per_s": 0,  # count every row: the tests compare exact row counts
}


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    return tmp_path_factory.mktemp("drift-home")


@pytest.fixture
def workspace(module_home, monkeypatch):
    monkeypatch.setenv("MLOPS_RAY_HOME", str(module_home))
    return get_workspace()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """Fresh in-distribution rows (other seed) and drifted rows, with labels."""
    out = {}
    for name, drift in (("same", 0.0), ("drifted", 1.0)):
        d = tmp_path_factory.mktemp(f"traffic-{name}")
        generate_dataset(d, 3000, shards=1, seed=99, drift=drift)
        out[name] = pd.read_parquet(d)
        out[f"{name}_dir"] = d
    return out


@pytest.fixture(scope="module")
def service(ray_session, module_home, tmp_path_factory):
    src = tmp_path_factory.mktemp("drift-src")
    generate_dataset(src, 4000, shards=2, seed=3)
    serve = {"port": free_port(), "min_replicas": 2, "max_replicas": 2, "num_cpus_per_replica": 0.25}
    raw = raw_config("drift", src, "drift-model", 30, serve)
    raw["drift"] = DRIFT
    with running_service(raw, module_home) as svc:
        yield svc


def send(url: str, frame: pd.DataFrame, per_request: int = 20) -> list[tuple[str, int, float]]:
    """POST the rows in requests of ``per_request``; every one must succeed. Returns (request_id, rows, time)."""
    out = []
    with httpx.Client(timeout=30) as c:
        for start in range(0, len(frame), per_request):
            chunk = frame.iloc[start : start + per_request]
            r = c.post(f"{url}/predict", json={"records": records(chunk[FEATURES])})
            assert r.status_code == 200, r.text
            out.append((r.json()["request_id"], len(chunk), time.monotonic()))
    return out


def drift_report(url: str) -> dict:
    r = httpx.get(f"{url}/drift", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_rows(url: str, version: str, rows: int, timeout: float = 30.0) -> dict:
    """Poll /drift until the monitor has seen ``rows`` rows of ``version``."""
    deadline = time.monotonic() + timeout
    while True:
        rep = drift_report(url)
        seen = rep["versions"].get(version, {}).get("total_rows", 0)
        if seen >= rows or time.monotonic() > deadline:
            return rep
        time.sleep(0.3)


def wait_settled(url: str, version: str, rows: int, quiet_s: float, timeout: float) -> dict:
    """Poll /drift until the monitor has seen ``rows`` rows of ``version``, or, once it answers restored
    from its checkpoint, its row count has not moved for ``quiet_s`` (many push intervals: what was
    lost in the crash will not come)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while True:
        rep = drift_report(url)
        seen = rep["versions"].get(version, {}).get("total_rows", 0)
        now = time.monotonic()
        if seen != last:
            last, since = seen, now
        restored = rep["monitor"].get("restored_from_checkpoint")
        if seen >= rows or (restored and now - since >= quiet_s) or now > deadline:
            return rep
        time.sleep(0.3)


def reference_of(svc) -> DriftReference:
    from mlops_ray.registry import tracking

    ctx = svc["ctx"]
    model = tracking.load_pyfunc(ctx.tracking_uri, f"models:/drift-model/{svc['version']}").unwrap_python_model()
    assert model.reference_stats and model.reference_stats.get("prediction"), "model ships no drift reference"
    return DriftReference.from_stats(model.reference_stats, model.task), model


def test_live_psi_equals_offline_psi_on_the_same_rows(service, traffic):
    url, version = service["url"], service["version"]
    rows = traffic["same"].iloc[:600]
    send(url, rows)
    deadline = time.monotonic() + 30
    while True:  # the window's counts, not only the row total: both replicas' pushes merged
        rep = wait_rows(url, version, 600)
        live = rep["versions"][version]["current"]
        if live["rows"] >= 600 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    total = rep["versions"][version]["total_rows"]
    assert live["rows"] == 600 and rep["serving_version"] == version, (live["rows"], total, rep["monitor"])
    ref, model = reference_of(service)
    table = pa.Table.from_pandas(rows[FEATURES], preserve_index=False)
    counts = ref.count(table, model.score_frame(rows[FEATURES]))
    offline = evaluate(ref, counts, **limits_of(service["cfg"].drift))
    want = {f["feature"]: f["psi"] for f in offline["features"]}
    got = {f["feature"]: f["psi"] for f in live["features"]}
    assert got.keys() == want.keys() == set(FEATURES)
    for k in want:
        assert abs(got[k] - want[k]) <= 1e-9, (k, got[k], want[k])
    assert abs(live["prediction"]["psi"] - offline["prediction"]["psi"]) <= 1e-9
    assert live["status"] == "ok"  # in-distribution traffic
    # the monitor reports over Prometheus' text format on loopback
    addr = rep["monitor"]["metrics"]
    assert addr.startswith("http://127.0.0.1:")
    text = httpx.get(addr, timeout=10).text
    assert 'mlops_drift_status{model="drift-model",model_version="%s"}' % version in text


def test_drifted_traffic_closes_a_window_in_alert(service, traffic):
    url, version = service["url"], service["version"]
    before = len(drift_report(url)["versions"][version]["windows"])
    send(url, traffic["drifted"].iloc[:1500], per_request=50)
    rep = wait_rows(url, version, 600 + 1500)
    windows = rep["versions"][version]["windows"]
    assert len(windows) > before
    last = windows[-1]
    assert last["status"] == "alert", [(f["feature"], f["psi"], f["status"]) for f in last["features"]]
    alerted = {f["feature"] for f in last["features"] if f["status"] == "alert"}
    # --drift shifts income, credit score, utilization, session length and login gaps
    assert alerted & {"income", "credit_score", "utilization", "session_minutes", "days_since_login"}
    assert last["prediction"] is not None


def test_feedback_joins_labels_and_reports_a_rolling_metric(service, traffic):
    url, version = service["url"], service["version"]
    frame = traffic["same"].iloc[600:760]
    sent = send(url, frame, per_request=2)
    labels = []
    for i, (rid, n, _) in enumerate(sent):
        for rec in range(n):
            labels.append({"request_id": rid, "record": rec, "label": int(frame["label"].iloc[2 * i + rec])})
    r = httpx.post(f"{url}/feedback", json={"labels": labels}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] + len(r.json()["unknown"]) == len(labels)
    # labels for requests a replica has not pushed yet are retried once it has
    if r.json()["unknown"]:
        time.sleep(1.0)
        retry = [labels[i] for i in r.json()["unknown"]]
        r2 = httpx.post(f"{url}/feedback", json={"labels": retry}, timeout=30)
        assert r2.json()["unknown"] == []
    fb = drift_report(url)["versions"][version]["feedback"]
    assert fb["labelled_rows"] == len(labels)
    assert 0.5 < fb["rolling"] <= 1.0 and fb["metric"] == "auc" and fb["test"] is not None
    assert set(fb["permutation_importance"]) == set(FEATURES)
    bad = httpx.post(f"{url}/feedback", json={"labels": [{"request_id": "x", "label": 7}]}, timeout=30)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["labels", 0, "label"]
    unknown = httpx.post(f"{url}/feedback", json={"labels": [{"request_id": "nope", "label": 1}]}, timeout=30)
    assert unknown.status_code == 200 and unknown.json()["unknown"] == [0]


def test_monitor_killed_mid_stream_loses_at_most_the_last_interval(service, traffic):
    import ray

    from mlops_ray.drift.monitor import NAMESPACE, actor_name

    url, version = service["url"], service["version"]
    seen0 = drift_report(url)["versions"][version]["total_rows"]
    frame = traffic["same"].iloc[:2000]
    handle = ray.get_actor(actor_name("drift-model"), namespace=NAMESPACE)
    sent = send(url, frame.iloc[:1000])
    t_kill = time.monotonic()
    ray.kill(handle, no_restart=False)  # a crash: Ray restarts it, it restores its checkpoint
    sent += send(url, frame.iloc[1000:])  # every request still succeeds (asserted in send)
    total = 2000
    rep = wait_settled(url, version, seen0 + total, quiet_s=2.0, timeout=30)
    assert rep["monitor"]["restored_from_checkpoint"] is True
    seen = rep["versions"][version]["total_rows"] - seen0
    # lost: what was merged after the last checkpoint before the kill (checkpoint interval + tick),
    # plus pushes that were in flight; bound it by the rows sent in the 1.5 s before the kill.
    recent = sum(n for _, n, t in sent if t_kill - 1.5 <= t <= t_kill)
    assert total - recent <= seen <= total, (seen, total, recent)


def test_prometheus_scrapes_the_psi_gauge(service, tmp_path):
    """A real Prometheus server scrapes the monitor; the PSI gauge reads back through its HTTP API."""
    # Prometheus from PATH, else Debian's package fetched and extracted into .cache/ (not installed)
    root = Path(__file__).resolve().parents[2]
    found = subprocess.run([str(root / "scripts" / "prometheus.sh")], capture_output=True, text=True, timeout=300)
    binary = found.stdout.strip() or shutil.which("prometheus")
    if not binary:
        if os.environ.get("MLOPS_RAY_REQUIRE_PROMETHEUS"):
            pytest.fail("no Prometheus: not on PATH and Debian's 'prometheus' package could not be fetched")
        pytest.skip("no Prometheus: not on PATH and no apt-get to fetch Debian's 'prometheus' package")
    url, version = service["url"], service["version"]
    rep = drift_report(url)
    target = rep["monitor"]["metrics"].removeprefix("http://").removesuffix("/metrics")
    port = free_port()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n"
        f"  - job_name: drift\n    static_configs:\n      - targets: ['{target}']\n"
    )
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        latest = rep["versions"][version]["windows"][-1]
        feature = latest["features"][0]["feature"]
        query = f'mlops_drift_psi{{model_version="{version}",feature="{feature}"}}'
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline and not result:
            time.sleep(1)
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5)
                result = r.json()["data"]["result"] if r.status_code == 200 else []
            except httpx.HTTPError:
                pass
        assert result, "Prometheus never returned the gauge"
        value = float(result[0]["value"][1])
        assert np.isclose(value, latest["features"][0]["psi"], rtol=1e-9)
    finally:
        proc.terminate()
        proc.wait(10)


def cli(module_home, *args, timeout=300):
    env = {**os.environ, "MLOPS_RAY_HOME": str(module_home)}
    return subprocess.run(
        [sys.executable, "-m", "mlops_ray.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def config_file(service, tmp_path_factory):
    from mlops_ray.config import config_to_yaml

    path = tmp_path_factory.mktemp("drift-cfg") / "drift.yaml"
    path.write_text(config_to_yaml(service["cfg"]))
    return str(path)


def test_cli_drift_report_against_the_running_service(service, config_file, module_home, tmp_path):
    r = cli(module_home, "drift", "report", "--config", config_file, "--format", "json")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["serving_version"] == service["version"] and body["versions"][service["version"]]["total_rows"] > 0
    r = cli(module_home, "drift", "report", "--config", config_file)
    assert r.returncode == 0 and "PSI" in r.stdout and "income" in r.stdout, r.stdout
    png = tmp_path / "report.png"
    r = cli(module_home, "drift", "report", "--config", config_file, "--format", "png", "--out", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and r.stdout.strip() == str(png)
    # --fail-on: exit 1 exactly when the window shown is at least that bad
    latest = body["versions"][service["version"]]["windows"][-1]["status"]
    r = cli(module_home, "drift", "report", "--config", config_file, "--fail-on", "warn")
    assert r.returncode == (1 if latest in ("warn", "alert") else 0), (latest, r.stdout)
    r = cli(module_home, "drift", "report", "--config", config_file, "--window", "current", "--format", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["window"]["closed"] is False
    r = cli(module_home, "drift", "report", "--config", config_file, "--url", f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_cli_drift_compare_offline(service, traffic, config_file, module_home, tmp_path):
    same = cli(
        module_home,
        "drift",
        "compare",
        "--config",
        config_file,
        "--current",
        str(traffic["same_dir"]),
        "--format",
        "json",
    )
    assert same.returncode == 0, same.stderr
    ev = json.loads(same.stdout)
    assert ev["status"] == "ok" and ev["rows"] == 3000 and ev["model_version"] == service["version"]
    assert ev["prediction"] is not None
    drifted = cli(
        module_home,
        "drift",
        "compare",
        "--config",
        config_file,
        "--current",
        str(traffic["drifted_dir"]),
        "--format",
        "json",
        "--fail-on",
        "alert",
    )
    assert drifted.returncode == 1
    ev = json.loads(drifted.stdout)
    assert ev["status"] == "alert" and ev["features"][0]["status"] == "alert"
    assert all(k in ev["features"][0] for k in ("psi", "chance_threshold", "rows", "status"))
    html = tmp_path / "r.html"
    r = cli(
        module_home,
        "drift",
        "compare",
        "--config",
        config_file,
        "--current",
        str(traffic["drifted_dir"]),
        "--reference",
        service["snap"].id,
        "--format",
        "html",
        "--out",
        str(html),
    )
    assert r.returncode == 0 and "data:image/png;base64," in html.read_text()
    bad = cli(module_home, "drift", "compare", "--config", config_file, "--current", str(tmp_path / "missing"))
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_cli_drift_model_compares_drivers(service, traffic, config_file, module_home):
    r = cli(
        module_home,
        "drift",
        "model",
        "--config",
        config_file,
        "--current",
        str(traffic["drifted_dir"]),
        "--format",
        "json",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    assert set(rep["features"]) == set(FEATURES) and rep["status"] in ("stable", "changed")
    assert -1.0 <= rep["candidate_vs_training"]["spearman"] <= 1.0 and rep["moved"]
    run = service["ctx"].client.get_run(rep["candidate_run_id"])
    assert "model_drift.spearman" in run.data.metrics and run.data.tags["model_drift.status"] == rep["status"]
