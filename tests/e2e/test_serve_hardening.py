"""The model service against hostile input (issue 8, "The service"), over real HTTP on 127.0.0.1,
on the session's real local Ray.

* a 1 GB chunked upload gets its 413 within seconds and the replica's memory stays within a small
  multiple of ``serve.max_body_bytes`` (before: read whole, +1.9 GB, 413 after ten seconds);
* the catalogue of bodies that gave 500s or were accepted though not JSON (``tests/_bad_payloads.py``)
  gets the same 4xx as in the unit tier, never a 5xx, and the service still answers afterwards;
* schemathesis fuzzing from the service's own OpenAPI schema finds no 5xx.

One trained and promoted model per module, one replica; bounded work, 127.0.0.1 only.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import psutil
import pytest
from _bad_payloads import catalogue
from _cluster import free_port
from _fuzz import fuzz, with_model_features
from _service import raw_config, running_service
from _service import records as _records
from _service import rows as _rows

from mlops_ray.data.generate import generate_dataset
from mlops_ray.workspace import get_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LIMIT = 4 * 1024 * 1024  # serve.max_body_bytes of this module's service
GB = 1 << 30


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-home")


@pytest.fixture
def workspace(module_home, monkeypatch):
    """Override the per-test workspace: the whole module shares one workspace and MLflow store."""
    monkeypatch.setenv("MLOPS_RAY_HOME", str(module_home))
    return get_workspace()


@pytest.fixture(scope="module")
def service(ray_session, module_home, tmp_path_factory):
    src = tmp_path_factory.mktemp("hardening-src")
    generate_dataset(src, 3000, shards=2, seed=5)
    serve = {
        "port": free_port(),
        "poll_interval_s": 1.0,
        "max_body_bytes": LIMIT,
        "min_replicas": 1,
        "max_replicas": 1,  # one replica: the upload and the memory measured are the same one's
        "num_cpus_per_replica": 0.25,
    }
    with running_service(raw_config("hardening", src, "hardening-model", 20, serve), module_home) as svc:
        yield svc


def _assert_still_correct(service) -> None:
    """A valid request on each scoring route still gets 200 from the same model version."""
    recs = _records(_rows(service["snap"], 3))
    r = httpx.post(f"{service['url']}/predict", json={"records": recs}, timeout=30)
    assert r.status_code == 200, r.text
    assert len(r.json()["predictions"]) == 3 and r.json()["model"]["version"] == service["version"]
    r = httpx.post(f"{service['url']}/invocations", json={"dataframe_records": recs}, timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
    assert httpx.get(f"{service['url']}/health", timeout=10).status_code == 200


# --------------------------------------------------------------------------- streaming uploads
def _upload(url: str, total: int, *, declared: bool = False, deadline_s: float = 60.0) -> tuple[str, int, float]:
    """POST ``total`` bytes of a (never valid) JSON body to ``/predict`` over a raw socket, made lazily
    from one reused 64 KiB block, chunked unless ``declared`` (then with a Content-Length).

    Checks for the response between sends and stops sending once it starts, as an HTTP client
    that reads early responses does. Returns (status line, bytes sent, seconds to the status line).
    """
    u = httpx.URL(url)
    head = f"POST /predict HTTP/1.1\r\nHost: {u.host}:{u.port}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {total}\r\n\r\n" if declared else "Transfer-Encoding: chunked\r\n\r\n"
    block = b" " * 65536
    frame = block if declared else b"%x\r\n" % len(block) + block + b"\r\n"
    sock = socket.create_connection((u.host, u.port), timeout=10)
    sock.sendall(head.encode())
    sock.setblocking(False)
    view, offset, sent, response = memoryview(frame), 0, 0, b""
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < deadline_s:
            try:
                data = sock.recv(65536)
                if not data:
                    break
                response += data
                if b"\r\n" in response:
                    break
            except BlockingIOError:
                pass
            if sent >= total:
                time.sleep(0.001)  # everything sent: wait for the answer
                continue
            try:
                n = sock.send(view[offset:])
            except BlockingIOError:
                time.sleep(0.0005)
                continue
            except OSError:  # the server closed: read what it answered
                sock.setblocking(True)
                sock.settimeout(5)
                try:
                    response += sock.recv(65536)
                except OSError:
                    pass
                break
            offset, sent = (offset + n) % len(frame), sent + n
        elapsed = time.perf_counter() - t0
    finally:
        sock.close()
    return response.split(b"\r\n", 1)[0].decode("latin-1"), sent, elapsed


def _replica_processes() -> list[psutil.Process]:
    """This session's ModelServer replicas: descendants of this test process (its Ray cluster's
    workers) whose title names a Serve replica."""
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "ServeReplica" in cmd and "ModelServer" in cmd:
            found.append(p)
    return found


class PeakRss:
    """The largest RSS growth of any of ``procs`` while the block runs, sampled every 5 ms."""

    def __init__(self, procs: list[psutil.Process]):
        self.procs = procs
        self.base = {p.pid: p.memory_info().rss for p in procs}
        self.peak = dict(self.base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for p in self.procs:
                try:
                    self.peak[p.pid] = max(self.peak[p.pid], p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def growth(self) -> int:
        return max(self.peak[pid] - self.base[pid] for pid in self.base)


def test_1gb_chunked_upload_gets_413_fast_and_replica_memory_stays_bounded(service):
    url = service["url"]
    replicas = _replica_processes()
    assert replicas, "no ServeReplica process among this test process's descendants"
    _upload(url, 3 * LIMIT)  # warm-up: the first 413's allocations are not the upload's
    _assert_still_correct(service)
    with PeakRss(replicas) as rss:
        status, sent, elapsed = _upload(url, GB)
        time.sleep(1.0)  # memory kept after the answer counts too
    print(
        f"1 GB chunked upload: {status!r} after {elapsed:.2f}s, {sent / 1e6:.1f} MB sent; "
        f"replica RSS +{rss.growth / 1e6:.1f} MB (limit {LIMIT / 1e6:.1f} MB)"
    )
    assert status.startswith("HTTP/1.1 413"), status
    assert elapsed < 5.0  # before: ~10 s, after reading all of it
    assert sent < GB // 4  # the client was told to stop long before the end
    assert rss.growth < 3 * LIMIT  # before: +1.9 GB
    _assert_still_correct(service)


def test_1gb_declared_content_length_gets_413_before_the_body_is_read(service):
    status, sent, elapsed = _upload(service["url"], GB, declared=True)
    print(f"1 GB declared upload: {status!r} after {elapsed:.2f}s, {sent / 1e6:.1f} MB sent")
    assert status.startswith("HTTP/1.1 413"), status
    assert elapsed < 5.0 and sent < GB // 4
    _assert_still_correct(service)


# --------------------------------------------------------------------------- the catalogue
def test_bad_payload_catalogue_gets_4xx_never_5xx_and_service_stays_correct(service):
    url = service["url"]
    good = _records(_rows(service["snap"], 1))[0]
    cases = catalogue(good, num="income", cat="region", limit=LIMIT)
    server_errors, mismatches = [], []
    with httpx.Client(timeout=60) as client:
        for case in cases:
            headers = {"content-type": case.content_type} if case.content_type else {}
            r = client.post(f"{url}{case.route}", content=case.body, headers=headers)
            if r.status_code >= 500:
                server_errors.append((case.id, r.status_code, r.text[:300]))
                continue
            body = r.json()  # always JSON
            locs = [e["loc"] for e in body["detail"]] if isinstance(body.get("detail"), list) else []
            if r.status_code != case.status or (case.loc is not None and case.loc not in locs):
                mismatches.append((case.id, r.status_code, r.text[:300]))
    print(f"{len(cases)} bad payloads sent: {len(server_errors)} 5xx, {len(mismatches)} unexpected answers")
    assert server_errors == []
    assert mismatches == []
    _assert_still_correct(service)


# --------------------------------------------------------------------------- fuzzing
def test_schemathesis_fuzzing_from_the_openapi_schema_finds_no_5xx(service):
    import requests
    import schemathesis

    url = service["url"]
    raw = httpx.get(f"{url}/openapi.json", timeout=10).json()
    for route in ("/predict", "/invocations"):
        assert "requestBody" in raw["paths"][route]["post"], route  # so the fuzzer generates bodies
    features = httpx.get(f"{url}/model", timeout=10).json()["feature_schema"]
    numeric = [f for f, t in features.items() if t.startswith("number")]
    categorical = [f for f, t in features.items() if t.startswith("string")]
    session = requests.Session()

    def call(case):
        return case.call(base_url=url, session=session, timeout=30)

    t0 = time.perf_counter()
    # every operation as the service declares it (positive and negative cases), then /predict with
    # records narrowed to the model's features, so generated values reach preprocessing and the model
    sent = fuzz(schemathesis.openapi.from_dict(raw), call, max_examples=30)
    narrowed = schemathesis.openapi.from_dict(with_model_features(raw, numeric, categorical))
    sent += fuzz(narrowed, call, max_examples=60, paths=["/predict"])
    elapsed = time.perf_counter() - t0
    by_status: dict[int, int] = {}
    for (_, status), n in sent.items():
        by_status[status] = by_status.get(status, 0) + n
    print(f"schemathesis sent {sum(sent.values())} requests in {elapsed:.1f}s: by status {by_status}; {dict(sent)}")
    assert not any(status >= 500 for status in by_status)
    assert sent[("POST /predict", 200)] > 0  # the narrowed schema reached the model
    assert elapsed < 90
    _assert_still_correct(service)
