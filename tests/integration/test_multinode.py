"""The whole loop on a real two-node Ray cluster whose nodes share no disk and no address (issue 16).

One cluster for the module (``tests/_multinode.py``: each node in its own network namespace, the
worker with a private mount namespace that hides the driver's local directory; loopback fallback
where namespaces cannot be made, and the test output says which mode ran), and the services a
cluster uses, on the bridge address both nodes reach:

* the workspace on an S3-compatible server (``MLOPS_RAY_HOME=s3://...``, moto's, tests/_s3.py),
* an MLflow tracking server on a real PostgreSQL with artifacts proxied to the same store
  (tests/_tracking.py; ``mlflow.tracking_uri: http://...`` in the config).

First the cluster itself (this process is a driver of it from the head node): two alive nodes with
their own ids and private addresses, tasks placed where pinned and spread over both, the worker's
private filesystem view, drivers attaching on either node, services on the bridge reached from both,
nothing listening beyond loopback and the private namespaces. ``MLOPS_RAY_MULTINODE_MODE`` (auto |
netns | loopback) picks the mode; run with ``-s`` to see which ran. The session's local Ray
(``ray_session``), when up, is shut down for the module and started again after it (one cluster per
process).

Then every command runs unchanged as a user runs it: ``mlops-ray ...`` CLI processes on a node, or Ray jobs
submitted through Ray's job API (``jobs/pipeline.py``, ``jobs/watch.py``). Placement is asserted from
Ray's own task/actor metadata (the state API over the dashboard), not from logs. Failures: the worker
node is SIGKILLed (raylet and every process of it) during training and under serving load while the
drift monitor runs there; the figures are printed (README "Run on a cluster").
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests._multinode import http_get, mount_fstype, path_exists, start_two_node_cluster, where_am_i, write_text

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET = "mn-workspace"
MODEL = "mn-churn"
MODE = os.environ.get("MLOPS_RAY_MULTINODE_MODE", "auto")  # auto | netns | loopback
ROWS, SHARDS = 6000, 6
FIGURES: dict[str, float] = {}


def _say(msg: str) -> None:
    print(f"[multinode] {msg}", flush=True)


# ------------------------------------------------------------------ the cluster and its services
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests._multinode import free_ports_on
    from tests._s3 import ACCESS, S3Server
    from tests._tracking import start_tracking_stack

    shared = tmp_path_factory.mktemp("mn-shared")  # config and source files: what every machine has
    local = tmp_path_factory.mktemp("mn-local")  # the head's local part of the workspace: hidden from the worker
    s3_port = free_ports_on("127.0.0.1", 1)[0]
    aws = {
        "AWS_ACCESS_KEY_ID": ACCESS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": ACCESS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": ACCESS["region_name"],
    }

    def node_env(service_host: str) -> dict[str, str]:
        # What cluster.yaml's setup gives every node: the object store's endpoint and credentials, and the
        # workspace URI. Ray workers inherit their raylet's environment.
        return {
            **aws,
            "AWS_ENDPOINT_URL_S3": f"http://{service_host}:{s3_port}",
            "MLOPS_RAY_HOME": f"s3://{BUCKET}/ws",
            "MLOPS_RAY_LOCAL_DIR": str(local),
            "MLOPS_RAY_PROGRESS": "0",
        }

    import ray

    session_ray = ray.is_initialized()
    if session_ray:  # the session's local cluster: this process can drive one cluster at a time
        ray.shutdown()
    t0 = time.monotonic()
    cluster = start_two_node_cluster(
        tmp_path_factory.mktemp("mn-cluster"), cpus_per_node=2, mode=MODE, env=node_env, hide=(local,)
    )
    _say(f"mode={cluster.mode} head={cluster.head_ip} worker={cluster.worker_ip} services={cluster.service_host}")
    if cluster.fallback_reason:
        _say(f"loopback fallback: {cluster.fallback_reason}")
    s3 = tracking = None
    saved = {k: os.environ.get(k) for k in (*aws, "AWS_ENDPOINT_URL_S3")}
    try:
        s3 = S3Server(host=cluster.service_host, port=s3_port).start()
        s3.client().create_bucket(Bucket=BUCKET)
        tracking = start_tracking_stack(s3, host=cluster.service_host)
        os.environ.update(aws, AWS_ENDPOINT_URL_S3=s3.endpoint_url)  # this process reads the bucket too
        src = _upload_source(s3, shared)
        cfg_path = _write_config(shared / "cluster.yaml", src, tracking.url, cluster)
        _say(f"cluster + S3 + PostgreSQL/MLflow up in {time.monotonic() - t0:.1f} s ({cluster.timings})")
        yield _Stack(cluster, s3, tracking, cfg_path, shared, local, src)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if FIGURES:
            _say("figures: " + json.dumps(FIGURES))
        for stop in (getattr(tracking, "stop", None), getattr(s3, "stop", None), cluster.stop):
            if stop is not None:
                try:
                    stop()
                except Exception as err:  # noqa: BLE001 - tear down the rest
                    _say(f"teardown: {err!r}")
        if session_ray:
            from mlops_ray.ray_runtime import ensure_ray

            ensure_ray(
                num_cpus=int(os.environ.get("MLOPS_RAY_TEST_CPUS", "2")), include_dashboard=False, address="local"
            )


class _Stack:
    def __init__(self, cluster, s3, tracking, cfg_path, shared, local, src):
        self.cluster, self.s3, self.tracking, self.cfg_path = cluster, s3, tracking, cfg_path
        self.shared, self.local, self.src = shared, local, src

    def cfg(self, **overrides) -> Path:
        """A variant of the module's config (another model name, ...), written beside it."""
        raw = yaml.safe_load(self.cfg_path.read_text())
        for dotted, value in overrides.items():
            node = raw
            *parents, last = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = value
        path = self.shared / f"cfg-{abs(hash(json.dumps(overrides, sort_keys=True))):x}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    def mlflow(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking.url, self.tracking.url)

    def job(self, argv: list[str], timeout: float = 300) -> tuple[str, str]:
        """Submit ``python <argv>`` through Ray's job API and follow it to the end: (status, logs)."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(self.cluster.dashboard_url)
        sid = client.submit_job(entrypoint=" ".join([sys.executable, *map(str, argv)]))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = client.get_job_status(sid)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                return str(status), client.get_job_logs(sid)
            time.sleep(0.5)
        client.stop_job(sid)
        return "TIMEOUT", client.get_job_logs(sid)

    def cli_on(self, node: str, *args: str, timeout: float = 300):
        run = self.cluster.run_on_head if node == "head" else self.cluster.run_on_worker
        return run([str(Path(sys.executable).parent / "mlops-ray"), *args], timeout=timeout, cwd=str(self.shared))


def _upload_source(s3, shared: Path) -> str:
    """Sample data generated once and put in the bucket: the source every node reads."""
    from mlops_ray.data.generate import generate_dataset

    local = shared / "src"
    generate_dataset(local, ROWS, shards=SHARDS, seed=3)
    client = s3.client()
    for f in sorted(local.rglob("*.parquet")):
        client.upload_file(str(f), BUCKET, f"raw/churn/{f.relative_to(local).as_posix()}")
    return f"s3://{BUCKET}/raw/churn"


def _write_config(path: Path, source: str, tracking_url: str, cluster) -> Path:
    from mlops_ray.data.generate import FEATURE_SPEC

    # netns: every node's Serve proxy binds its own namespace (lo + one private veth); loopback: 127.0.0.1.
    serve_host = "0.0.0.0" if cluster.mode == "netns" else "127.0.0.1"
    from tests._multinode import free_ports_on

    with cluster.in_head_netns():  # a free port where the head's proxy listens (never a fixed one)
        (serve_port,) = free_ports_on("127.0.0.1", 1)
    raw = {
        "data": {
            "name": "churn",
            "source": source,
            "id_column": FEATURE_SPEC["id_column"],
            "label_column": FEATURE_SPEC["label_column"],
            "timestamp_column": FEATURE_SPEC["timestamp_column"],
            "numeric_features": list(FEATURE_SPEC["numeric"]),
            "categorical_features": list(FEATURE_SPEC["categorical"]),
            "batch_size": 2048,
        },
        "model": {"num_boost_round": 30, "early_stopping_rounds": None, "seed": 7, "params": {"max_depth": 4}},
        "tune": {
            "enabled": False,
            "num_samples": 2,
            "max_concurrent_trials": 2,
            "search_alg": "random",
            "search_space": {"max_depth": {"randint": [3, 6]}},
        },
        "mlflow": {"tracking_uri": tracking_url, "experiment": "multinode"},
        "registry": {"model_name": MODEL},
        "serve": {
            "host": serve_host,
            "port": serve_port,
            "min_replicas": 2,
            "max_replicas": 2,
            "num_cpus_per_replica": 0.25,
            "poll_interval_s": 1.0,
        },
        "drift": {
            "window_rows": 200,
            "min_rows": 100,
            "push_every_rows": 32,
            "push_interval_s": 0.5,
            "checkpoint_interval_s": 0.5,
        },
        "pipeline": {"poll_interval_s": 0.5, "data": {"settle_s": 0}, "drift": {"enabled": False}},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


# ------------------------------------------------------------------ Ray's metadata
def _tasks(stack, job_id: str | None = None) -> list[dict]:
    from ray.util.state import list_tasks

    filters = [("job_id", "=", job_id)] if job_id else None
    out = list_tasks(
        address=stack.cluster.dashboard_url, filters=filters, detail=True, limit=10_000, raise_on_missing_output=False
    )
    return [t if isinstance(t, dict) else vars(t) for t in out]


def _actors(stack, **eq) -> list[dict]:
    from ray.util.state import list_actors

    out = list_actors(
        address=stack.cluster.dashboard_url,
        filters=[(k, "=", v) for k, v in eq.items()],
        detail=True,
        limit=10_000,
        raise_on_missing_output=False,
    )
    return [a if isinstance(a, dict) else vars(a) for a in out]


def _both(stack) -> set[str]:
    return {stack.cluster.head_node_id, stack.cluster.worker_node_id}


# ------------------------------------------------------------------ tests
# ------------------------------------------------------------------ the cluster itself
# (this process is a driver of it too, from the head node: see the ``cluster`` fixture)
WILDCARDS = ("*", "0.0.0.0", "[::]")


@pytest.fixture
def cluster(stack):
    import logging

    stack.cluster.ray_init(logging_level=logging.WARNING)
    return stack.cluster


@pytest.fixture
def driver_only_dir(stack):
    """A directory of the driver's that the worker node must not see (hidden from it in netns mode)."""
    return stack.local


def test_two_alive_nodes_with_different_ids_and_addresses(cluster, record_property):
    import ray

    record_property("multinode_mode", cluster.mode)
    print(f"mode={cluster.mode}")
    alive = {n["node_id"]: n for n in cluster.nodes() if n["state"] == "ALIVE"}
    assert set(alive) == {cluster.head_node_id, cluster.worker_node_id}
    assert cluster.head_node_id != cluster.worker_node_id
    assert alive[cluster.head_node_id]["is_head_node"] and not alive[cluster.worker_node_id]["is_head_node"]
    managers = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert managers == {cluster.head_node_id: cluster.head_ip, cluster.worker_node_id: cluster.worker_ip}
    if cluster.mode == "netns":
        assert cluster.head_ip != cluster.worker_ip
        for ip in (cluster.head_ip, cluster.worker_ip, cluster.service_host):
            assert ipaddress.ip_address(ip).is_private and not ipaddress.ip_address(ip).is_loopback
    # this process drives the cluster from the head node
    assert ray.get_runtime_context().get_node_id() == cluster.head_node_id


def test_pinned_tasks_run_where_asked_and_spread_tasks_use_both_nodes(cluster):
    import ray
    from ray.util.state import list_tasks

    where = ray.remote(num_cpus=0.5)(where_am_i)
    tag = uuid.uuid4().hex[:8]
    expected = {"head": cluster.head_node_id, "worker": cluster.worker_node_id}
    refs = {
        node: [where.options(name=f"pinned_{node}_{tag}", **cluster.pin(node)).remote() for _ in range(3)]
        for node in expected
    }
    for node, node_refs in refs.items():
        assert {nid for nid, _ in ray.get(node_refs)} == {expected[node]}, node  # the task's own view
    # ... and Ray's task table (events reach it asynchronously)
    deadline, seen = time.monotonic() + 30, {}
    while time.monotonic() < deadline:
        for node in expected:
            tasks = list_tasks(
                address=cluster.dashboard_url,
                filters=[("name", "=", f"pinned_{node}_{tag}")],
                detail=True,
                raise_on_missing_output=False,
            )
            seen[node] = [(t.state, t.node_id) for t in tasks]
        if all(len(v) == 3 and all(s == "FINISHED" for s, _ in v) for v in seen.values()):
            break
        time.sleep(0.5)
    for node in expected:
        assert seen[node] == [("FINISHED", expected[node])] * 3, (node, seen)
    # SPREAD places lease requests round-robin, but a granted lease is reused for the next queued task
    # of the same kind: instant tasks can all run on one leased worker. Tasks that last a moment make the
    # driver ask for more leases at once (8 x 0.5 CPU fills both nodes); one retry for a slow start.
    both = {cluster.head_node_id, cluster.worker_node_id}
    for _ in range(2):
        spread = ray.get([where.options(scheduling_strategy="SPREAD").remote(1.0) for _ in range(8)])
        if {nid for nid, _ in spread} == both:
            break
    assert {nid for nid, _ in spread} == both


def test_the_worker_has_a_private_filesystem_view(cluster, driver_only_dir):
    if cluster.mode != "netns":
        pytest.skip(f"mode={cluster.mode}: both nodes see one filesystem ({cluster.fallback_reason or 'forced'})")
    import ray

    def on(node, fn):
        return ray.remote(num_cpus=0.1)(fn).options(**cluster.pin(node))

    path = cluster.private_root / f"from-worker-{uuid.uuid4().hex[:8]}.txt"
    # the worker sees an empty tmpfs of its own there, and its file in it
    assert ray.get(on("worker", mount_fstype).remote(str(cluster.private_root))) == "tmpfs"
    assert ray.get(on("worker", write_text).remote(str(path), "written on the worker")) == [path.name]
    assert ray.get(on("worker", path_exists).remote(str(path)))
    # neither the driver (root namespace) nor a task on the head sees it
    assert not path.exists() and list(cluster.private_root.iterdir()) == []
    assert not ray.get(on("head", path_exists).remote(str(path)))
    # what the driver writes in a directory hidden from the worker stays on the driver's side
    mine = driver_only_dir / "driver.txt"
    mine.write_text("driver")
    assert ray.get(on("head", path_exists).remote(str(mine)))
    assert not ray.get(on("worker", path_exists).remote(str(mine)))


def test_a_driver_started_on_the_worker_node_attaches_to_it(cluster):
    code = (
        "import os, ray\n"
        "kw = {'_temp_dir': os.environ['WORKER_TEMP_DIR']} if os.environ.get('WORKER_TEMP_DIR') else {}\n"
        "ray.init(address=os.environ['RAY_ADDRESS'], logging_level='WARNING', **kw)\n"
        "print('NODE=' + ray.get_runtime_context().get_node_id())\n"
    )
    # netns mode: a plain ray.init on "the other machine"; loopback mode: both nodes are on one host
    # and Ray prefers the head, so the driver names the worker's temp dir to pick it
    extra = {} if cluster.mode == "netns" else {"WORKER_TEMP_DIR": str(cluster.worker_temp_dir)}
    r = cluster.run_on_worker([sys.executable, "-c", code], env=extra, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"NODE={cluster.worker_node_id}" in r.stdout, (r.stdout, r.stderr[-2000:])
    r = cluster.run_on_head([sys.executable, "-c", code], timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"NODE={cluster.head_node_id}" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_a_service_bound_to_service_host_is_reached_from_both_nodes(cluster):
    import http.server
    import threading

    import ray

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from {self.client_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((cluster.service_host, 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://{cluster.service_host}:{server.server_address[1]}/"
        get = ray.remote(num_cpus=0.1)(http_get)
        answers = {node: ray.get(get.options(**cluster.pin(node)).remote(url)) for node in ("head", "worker")}
    finally:
        server.shutdown()
        server.server_close()
    # each node reaches it from its own address
    assert answers == {"head": f"hello from {cluster.head_ip}", "worker": f"hello from {cluster.worker_ip}"}


def test_a_job_submitted_to_the_dashboard_runs_its_driver_on_the_head(cluster):
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(cluster.dashboard_url)  # from the root namespace: an HTTP client only
    code = "import ray; ray.init(); print('NODE=' + ray.get_runtime_context().get_node_id())"
    job = client.submit_job(entrypoint=f'{sys.executable} -c "{code}"')
    deadline, status = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        status = client.get_job_status(job)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            break
        time.sleep(0.5)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert f"NODE={cluster.head_node_id}" in logs, logs[-3000:]


def _is_private(addr: str, allowed: set[str]) -> bool:
    host = addr.strip("[]").removeprefix("::ffff:").split("%")[0]
    if host in allowed:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local


def test_nothing_of_the_cluster_listens_on_a_public_address(cluster):
    socks = cluster.listening_sockets(extra_pids=[os.getpid()])  # this process is a driver too
    assert socks, "no listener of the cluster found: the check would prove nothing"
    # in the root namespace only loopback, or the test's own private bridge where the services every node
    # uses listen (the object store in this process, the tracking server): it has no route out
    root = [s for s in socks if s["ns"] == "root" and not _is_private(s["addr"], {cluster.service_host})]
    assert root == [], f"listeners of the cluster on non-loopback addresses of the host: {root}"
    if cluster.mode == "netns":
        # every Ray listener lives in the nodes' namespaces, the driver's (this process) in the head's
        ray_socks = [s for s in socks if not (s["ns"] == "root" and s["addr"] == cluster.service_host)]
        assert {s["ns"] for s in ray_socks} == {cluster.head_netns, cluster.worker_netns}, socks
        assert any(s["pid"] == os.getpid() and s["ns"] == cluster.head_netns for s in socks), socks
        # ... whose only interfaces are lo and the private veth: a wildcard there reaches nothing else
        import json
        import subprocess

        for ns, ip in ((cluster.head_netns, cluster.head_ip), (cluster.worker_netns, cluster.worker_ip)):
            links = json.loads(subprocess.run(["ip", "-j", "-n", ns, "addr"], capture_output=True, text=True).stdout)
            addrs = {a["local"] for link in links for a in link.get("addr_info", [])}
            assert {a for a in addrs if not _is_private(a, set())} == {ip}, (ns, addrs)
        specific = [s for s in socks if s["addr"] not in WILDCARDS]
        allowed = {cluster.head_ip, cluster.worker_ip, cluster.service_host}
        assert [s for s in specific if not _is_private(s["addr"], allowed)] == []
    else:
        assert [s for s in socks if not _is_private(s["addr"], set())] == [], socks


def test_no_cluster_socket_listens_on_all_interfaces(cluster):
    socks = cluster.listening_sockets(extra_pids=[os.getpid()])
    wild = sorted({(s["ns"], s["process"], f"{s['addr']}:{s['port']}") for s in socks if s["addr"] in WILDCARDS})
    if wild and cluster.mode == "netns" and all(ns != "root" for ns, _, _ in wild):
        # Ray 2.60: GrpcServer(listen_to_localhost_only = node_ip == "127.0.0.1") and is_localhost(ip) in
        # the Python agents; no setting binds one address. Contained: the namespaces have no other interface.
        listing = "; ".join(f"{ns} {proc} {addr}" for ns, proc, addr in wild)
        pytest.xfail(
            "Ray binds all interfaces unless the node address is 127.0.0.1 (no knob in 2.60); "
            f"inside the nodes' private namespaces: {listing}"
        )
    assert wild == []


def test_pipeline_job_prepares_and_trains_on_both_nodes(stack):
    """`ray job submit --working-dir . -- python jobs/pipeline.py` as the README runs it (the CLI, the
    repository uploaded as the job's package, from outside the cluster's nodes): Ray Data's tasks ran on
    both nodes, Ray Train put one worker on each, the snapshot equals a single-process prepare of the
    same files, and the version is in the PostgreSQL registry with its artifacts in the bucket."""
    from mlops_ray.config import load_config
    from mlops_ray.data.prepare import prepare_snapshot
    from mlops_ray.data.snapshot import SnapshotStore
    from mlops_ray.workspace import get_workspace

    t0 = time.monotonic()
    before = {t["task_id"] for t in _tasks(stack)}
    r = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "submit", "--working-dir", "."]
        + ["--", "python", "jobs/pipeline.py", "--config", str(stack.cfg_path)],
        cwd=REPO,
        env=stack.cluster.env(RAY_ADDRESS=stack.cluster.dashboard_url),
        capture_output=True,
        text=True,
        timeout=400,
    )
    FIGURES["pipeline_job_s"] = round(time.monotonic() - t0, 1)
    logs = r.stdout + r.stderr
    assert r.returncode == 0, logs[-3000:]
    assert "pipeline run (manual)" in logs and "succeeded" in logs, logs[-3000:]
    tasks = [t for t in _tasks(stack) if t["task_id"] not in before]
    prep = {t["node_id"] for t in tasks if "MapBatches" in (t.get("name") or "")}
    assert prep == _both(stack), f"Ray Data's map tasks ran on {prep}"
    workers = [a for a in _actors(stack, class_name="RayTrainWorker")]
    assert {a["node_id"] for a in workers} == _both(stack), "one Ray Train worker per node"
    # The snapshot lives in the bucket and equals a one-process prepare of the same files.
    shared_ws = get_workspace(f"s3://{BUCKET}/ws")
    snap = SnapshotStore(shared_ws).find("churn@latest")
    cfg = load_config(stack.cfg_path)
    alone = prepare_snapshot(
        cfg.data, get_workspace(stack.shared / "one-node-ws"), source=str(stack.shared / "src"), engine="local"
    ).snapshot
    assert (snap.fingerprint, snap.id, snap.manifest["rows_per_split"]) == (
        alone.fingerprint,
        alone.id,
        alone.manifest["rows_per_split"],
    )
    # Registered in the PostgreSQL-backed registry, artifacts proxied to the bucket.
    client = stack.mlflow()
    champ = client.get_model_version_by_alias(MODEL, "champion")
    run = client.get_run(champ.run_id)
    assert run.data.params.get("execution.mode") == "distributed", run.data.params
    assert any(k.startswith("mlflow/") for k in stack.tracking.objects())
    stack.first_run_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test_")}
    # Nothing of MLflow's on the head's disk: no SQLite store, no artifact root (the pipeline on the
    # PostgreSQL-backed server; it caught a register call that SQLite accepted and a server refused).
    assert not list(stack.local.rglob("mlflow.db")) and not (stack.local / "artifacts").exists()


def test_tune_runs_trials_on_both_nodes(stack):
    """`mlops-ray tune` on the head: two concurrent trials of 2 CPUs each fit only one per node."""
    before = {a["actor_id"] for a in _actors(stack)}
    t0 = time.monotonic()
    r = stack.cli_on("head", "tune", "--config", str(stack.cfg(**{"tune.enabled": True})), timeout=400)
    FIGURES["tune_cli_s"] = round(time.monotonic() - t0, 1)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    trials = [a for a in _actors(stack) if a["actor_id"] not in before and a["class_name"] == "ImplicitFunc"]
    assert len(trials) >= 2 and {a["node_id"] for a in trials} == _both(stack), [
        (a["class_name"], a["node_id"]) for a in trials
    ]


def test_two_pipeline_runs_from_two_nodes_at_once(stack):
    """The run lock is a lease in the object store: a run started on each node at the same moment, one
    runs, the other is refused at once and recorded as coalesced; the history has both, nothing lost.
    The run that ran trained the first test's model again (same data, config and topology; another
    registered name): its test metrics equal that model's."""
    from mlops_ray.config import load_config
    from mlops_ray.pipeline import history as hist
    from mlops_ray.pipeline.run import pipeline_prefix
    from mlops_ray.state import store_for

    cfg_path = stack.cfg(**{"registry.model_name": "mn-race"})
    argv = [str(Path(sys.executable).parent / "mlops-ray"), "pipeline", "run", "--config", str(cfg_path)]
    kw = {"stdout": -1, "stderr": -1, "text": True, "cwd": str(stack.shared)}
    procs = {"head": stack.cluster.popen_on_head(argv, **kw), "worker": stack.cluster.popen_on_worker(argv, **kw)}
    outs = {node: p.communicate(timeout=400) for node, p in procs.items()}
    codes = {node: p.returncode for node, p in procs.items()}
    _say(f"concurrent runs: exit codes {codes}")
    winners = [n for n, c in codes.items() if c == 0]
    assert len(winners) == 1, {n: o[1][-1500:] for n, o in outs.items()}
    loser = next(n for n in codes if n not in winners)
    assert "in progress" in outs[loser][1], outs[loser][1][-1500:]
    entries = hist.read(store_for(f"s3://{BUCKET}/ws"), pipeline_prefix(load_config(cfg_path)))
    runs = [e for e in entries if e.get("kind") != "decision"]
    decisions = [e for e in entries if e.get("kind") == "decision"]
    assert [r["status"] for r in runs] == ["succeeded"]
    assert [d["action"] for d in decisions] == ["coalesce"] and "in progress" in decisions[0]["reason"]
    (version,) = stack.mlflow().search_model_versions("name='mn-race'")
    rerun = stack.mlflow().get_run(version.run_id).data
    assert rerun.params.get("execution.mode") == "distributed"
    first = getattr(stack, "first_run_metrics", None)
    if first is None:
        pytest.skip("the first test did not run: nothing to compare the metrics with")
    assert first and {k: rerun.metrics[k] for k in first} == first


def test_watch_job_retrains_when_new_data_lands(stack):
    """`jobs/watch.py` submitted through the job API sees new files in the bucket and runs the pipeline."""
    from mlops_ray.config import load_config
    from mlops_ray.data.generate import generate_dataset
    from mlops_ray.pipeline import history as hist
    from mlops_ray.pipeline.run import pipeline_prefix
    from mlops_ray.state import store_for

    new = stack.shared / "new"
    generate_dataset(new, 1500, shards=1, seed=11)
    for f in sorted(new.rglob("*.parquet")):
        stack.s3.client().upload_file(str(f), BUCKET, f"raw/churn/batch-2/{f.name}")
    t0 = time.monotonic()
    argv = [REPO / "jobs" / "watch.py", "--config", stack.cfg_path, "--max-runs", "1", "--duration", "240"]
    status, logs = stack.job(argv, timeout=300)
    FIGURES["watch_job_s"] = round(time.monotonic() - t0, 1)
    _say("watch job log tail:\n" + logs[-1500:])
    assert status == "SUCCEEDED", logs[-3000:]
    assert FIGURES["watch_job_s"] < 200, "the watcher ended by --duration, not after its one run"
    last = hist.read(store_for(f"s3://{BUCKET}/ws"), pipeline_prefix(load_config(stack.cfg_path)), kind="run")[-1]
    assert last["trigger"] == "data" and last["status"] == "succeeded", last


def test_training_survives_losing_the_worker_node(stack):
    """The worker node (raylet and all its processes) is SIGKILLed mid-training, after the first
    checkpoint is registered: Ray Train restarts the worker group from the last checkpoint once a
    node is back (the run records the round it resumed from), and the run completes.
    Recorded: when the kill came, how long until a new worker group ran on both nodes again, the total."""
    cluster = stack.cluster
    cfg_path = stack.cfg(**{"registry.model_name": "mn-fail", "model.num_boost_round": 150})
    exe = str(Path(sys.executable).parent / "mlops-ray")

    def workers_on_both(exclude: set[str]) -> list[dict]:
        alive = [a for a in _actors(stack, class_name="RayTrainWorker", state="ALIVE") if a["actor_id"] not in exclude]
        return alive if {a["node_id"] for a in alive} == _both(stack) else []

    before = {a["actor_id"] for a in _actors(stack)}
    ckpts_before = _new_checkpoints(stack, set())
    t0 = time.monotonic()
    proc = cluster.popen_on_head(
        [exe, "train", "--config", str(cfg_path)], stdout=-1, stderr=-1, text=True, cwd=str(stack.shared)
    )
    deadline = time.monotonic() + 120
    while not (first := workers_on_both(before)):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no Ray Train worker on each node within 120 s: {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)
    started = time.monotonic()
    # mid-training, once a second checkpoint (every 25 rounds) is being written to the bucket, which
    # means the first one is registered with Ray Train's controller: the restarted group must resume
    # from a checkpoint, not start over
    while len(_new_checkpoints(stack, ckpts_before)) < 2:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no checkpoint in the bucket while training ran: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    old_node = cluster.worker_node_id
    t_kill = cluster.kill_worker()
    t_dead = cluster.wait_node_state(old_node, "DEAD", timeout=60)
    new_node = cluster.restart_worker()
    states = {n["node_id"]: n["state"] for n in cluster.nodes()}
    assert new_node != old_node and cluster.worker_node_id == new_node
    assert states[old_node] == "DEAD" and states[new_node] == "ALIVE" and states[cluster.head_node_id] == "ALIVE"
    assert t_dead - t_kill < 20, f"the killed node was declared dead only after {t_dead - t_kill:.1f} s"
    seen = before | {a["actor_id"] for a in first}
    deadline = time.monotonic() + 180
    while not workers_on_both(seen) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    regrouped = time.monotonic()
    out, err = proc.communicate(timeout=400)
    total = time.monotonic() - t0
    assert proc.returncode == 0, (out + err)[-3000:]
    FIGURES.update(
        train_workers_up_s=round(started - t0, 1),
        train_kill_at_s=round(t_kill - t0, 1),
        train_node_dead_detected_s=round(t_dead - t_kill, 1),
        train_regrouped_after_kill_s=round(regrouped - t_kill, 1),
        train_with_node_loss_s=round(total, 1),
    )
    (version,) = stack.mlflow().search_model_versions("name='mn-fail'")
    run = stack.mlflow().get_run(version.run_id)
    assert run.data.params.get("execution.mode") == "distributed"
    assert int(run.data.params["model.resumed_from_round"]) >= 25  # from the checkpoint, not from scratch
    assert int(run.data.params["model.rounds_trained"]) == 150
    assert run.data.metrics.get("test_auc", 0) > 0.6
    _say(
        f"training, worker node killed at {t_kill - t0:.1f} s: a new worker group on both nodes "
        f"{regrouped - t_kill:.1f} s later, done in {total:.1f} s"
    )


def _new_checkpoints(stack, before: set[str]) -> set[str]:
    """Ray Train checkpoint directories under the workspace's ``ray/train`` in the bucket, minus ``before``."""
    pages = stack.s3.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="ws/ray/train/")
    keys = (o["Key"] for page in pages for o in page.get("Contents", []))
    found = {
        k.rsplit("/checkpoint_", 1)[0] + "/checkpoint_" + k.rsplit("/checkpoint_", 1)[1].split("/")[0]
        for k in keys
        if "/checkpoint_" in k
    }
    return found - before


PRE_MONITOR = """
import sys, time, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from mlops_ray.config import load_config
from mlops_ray.context import Context
from mlops_ray.drift.monitor import NAMESPACE, RemoteMonitor, actor_name
cfg = load_config(sys.argv[1]); ctx = Context.create(cfg)
ray.init()
# The monitor as the service starts it (drift/monitor.py get_monitor), placed on the node asked for;
# soft: when that node dies Ray restarts it on another one.
# Soft affinity may still pick another node (seen once, right after the worker node restarted): retry.
from ray.util.state import get_actor
for attempt in range(10):
    h = RemoteMonitor.options(
        name=actor_name(cfg.registry.model_name), namespace=NAMESPACE, lifetime="detached", max_restarts=-1,
        max_task_retries=-1, num_cpus=0, max_concurrency=32,
        scheduling_strategy=NodeAffinitySchedulingStrategy(sys.argv[2], soft=True),
    ).remote(cfg.registry.model_name, cfg.drift.model_dump(), ctx.state, ctx.tracking_uri)
    ray.get(h.ping.remote())
    if get_actor(h._ray_actor_id.hex()).node_id == sys.argv[2]:
        break
    ray.kill(h, no_restart=True)
    time.sleep(1)
else:
    sys.exit("the monitor could not be placed on the worker node")
"""


def _get(cluster, url: str, timeout: float = 10.0):
    import httpx

    with cluster.in_head_netns():  # the service listens in the head's namespace (netns mode)
        return httpx.get(url, timeout=timeout)


def test_service_spreads_and_survives_losing_a_node_with_the_drift_monitor(stack):
    """`mlops-ray serve` on the head: the two replicas land one per node; the drift monitor runs on the
    worker and checkpoints to the bucket. The worker node is SIGKILLed under 16 connections of load: the
    endpoint keeps answering, only requests in flight there fail, Serve replaces the replica, and the
    monitor restarts on the surviving node from its checkpoint with its windows."""
    from mlops_ray.config import load_config
    from mlops_ray.data.generate import FEATURE_SPEC
    from mlops_ray.drift.checkpoint import checkpoint_key
    from mlops_ray.drift.monitor import actor_name
    from mlops_ray.state import store_for

    cluster = stack.cluster
    cfg = load_config(stack.cfg_path)
    base = f"http://127.0.0.1:{cfg.serve.port}"
    pre = cluster.run_on_head(
        [sys.executable, "-c", PRE_MONITOR, str(stack.cfg_path), cluster.worker_node_id],
        timeout=120,
        cwd=str(stack.shared),
    )
    assert pre.returncode == 0, pre.stderr[-2000:]
    exe = str(Path(sys.executable).parent / "mlops-ray")
    log = open(stack.shared / "serve.log", "w")  # noqa: SIM115 - closed below
    service = cluster.popen_on_head(
        [exe, "serve", "--config", str(stack.cfg_path)], stdout=log, stderr=log, cwd=str(stack.shared)
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert service.poll() is None, (stack.shared / "serve.log").read_text()[-3000:]
            try:
                if _get(cluster, f"{base}/health", 2).status_code == 200:
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
        else:
            pytest.fail("service not healthy in 180 s: " + (stack.shared / "serve.log").read_text()[-3000:])
        replicas = [a for a in _actors(stack, state="ALIVE") if a["class_name"].startswith("ServeReplica")]
        assert {a["node_id"] for a in replicas} == _both(stack), [(a["class_name"], a["node_id"]) for a in replicas]
        (monitor,) = _actors(stack, name=actor_name(MODEL), state="ALIVE")
        assert monitor["node_id"] == cluster.worker_node_id
        # Traffic before the failure: windows close in the monitor and it checkpoints to the bucket.
        import pandas as pd

        features = [*FEATURE_SPEC["numeric"], *FEATURE_SPEC["categorical"]]
        first = pd.read_parquet(sorted((stack.shared / "src").rglob("*.parquet"))[0]).head(1)[features]
        record = json.loads(first.to_json(orient="records"))[0]
        body = stack.shared / "body.json"
        body.write_text(json.dumps({"records": [record]}))
        load_argv = [sys.executable, str(REPO / "tests" / "_http_load.py"), f"{base}/predict", str(body)]
        warm = cluster.run_on_head([*load_argv, "4", "4"], timeout=60)
        assert warm.returncode == 0 and all(s == 200 for *_, s, _ in json.loads(warm.stdout)), warm.stdout[-500:]
        time.sleep(2 * cfg.drift.push_interval_s + cfg.drift.checkpoint_interval_s)
        rep0 = _get(cluster, f"{base}/drift").json()
        version = next(iter(rep0["versions"]))
        windows0 = len(rep0["versions"][version].get("windows", []))
        assert store_for(f"s3://{BUCKET}/ws").read_bytes(checkpoint_key(MODEL)) is not None
        # The failure, under 16 connections.
        load = cluster.popen_on_head([*load_argv, "16", "16"], stdout=-1, stderr=-1, text=True)
        time.sleep(5)
        t_kill = cluster.kill_worker()
        dead_at = cluster.wait_node_state(cluster.dead_worker_ids[-1], "DEAD", timeout=60)
        out, err = load.communicate(timeout=120)
        assert load.returncode == 0, err[-2000:]
        reqs = json.loads(out)
        after = [r for r in reqs if r[0] >= t_kill]
        failed = [r for r in reqs if r[2] != 200]
        ok_after = [r for r in after if r[2] == 200]
        gaps = [b[1] - a[1] for a, b in zip(ok_after, ok_after[1:])]
        FIGURES.update(
            serve_requests=len(reqs),
            serve_failed=len(failed),
            serve_ok_after_kill=len(ok_after),
            serve_max_gap_after_kill_s=round(max(gaps, default=0.0), 2),
            node_dead_detected_s=round(dead_at - t_kill, 1),
        )
        _say(
            f"serving under node loss: {len(failed)} of {len(reqs)} requests failed "
            f"({sorted({r[2] for r in failed})}), {len(ok_after)} succeeded after the kill"
        )
        assert ok_after and ok_after[-1][1] > t_kill + 10, "the endpoint kept answering after the node died"
        assert len(failed) <= 2 * 16, "only requests in flight on the lost node fail"
        # The monitor: restarted on the surviving node from its checkpoint, windows kept.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = _actors(stack, name=actor_name(MODEL), state="ALIVE")
            if alive and alive[0]["node_id"] == cluster.head_node_id:
                try:
                    rep = _get(cluster, f"{base}/drift").json()
                except Exception:  # noqa: BLE001 - restarting
                    rep = None
                if rep and rep["monitor"].get("restored_from_checkpoint"):
                    break
            time.sleep(0.5)
        else:
            pytest.fail("the drift monitor did not come back on the head from its checkpoint")
        FIGURES["monitor_back_s"] = round(time.monotonic() - t_kill, 1)
        assert len(rep["versions"][version].get("windows", [])) >= windows0
        # Serve replaced the lost replica on the surviving node.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = [a for a in _actors(stack, state="ALIVE") if a["class_name"].startswith("ServeReplica")]
            if len(alive) == 2:
                break
            time.sleep(0.5)
        assert {a["node_id"] for a in alive} == {cluster.head_node_id}
    finally:
        service.terminate()
        try:
            service.wait(60)
        except Exception:  # noqa: BLE001
            service.kill()
        log.close()
