"""A real two-node Ray cluster whose nodes share neither an address nor a filesystem view (tests/_multinode.py).

One cluster for the module (~10 s to start). The pytest process is its driver: if the session's local
Ray (``ray_session``) is up, it is shut down for this module and started again afterwards, as
``ray_session`` starts it (Ray allows one cluster per process).

``MLOPS_RAY_MULTINODE_MODE`` (auto | netns | loopback; default auto) picks the mode; the output
says which ran (``mode=netns`` or ``mode=loopback``; run with ``-s`` to see it).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time
import uuid

import pytest

from tests._multinode import http_get, mount_fstype, path_exists, start_two_node_cluster, where_am_i, write_text

pytestmark = [pytest.mark.integration]

MODE = os.environ.get("MLOPS_RAY_MULTINODE_MODE", "auto")
WILDCARDS = ("*", "0.0.0.0", "[::]")


@pytest.fixture(scope="module")
def driver_only_dir(tmp_path_factory):
    """A directory of the driver's that the worker node must not see (hidden from it in netns mode)."""
    return tmp_path_factory.mktemp("driver-only")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, driver_only_dir):
    import ray

    session_ray = ray.is_initialized()
    if session_ray:  # the session's local cluster: this process can drive one cluster at a time
        ray.shutdown()
    c = start_two_node_cluster(tmp_path_factory.mktemp("two-node"), mode=MODE, hide=[driver_only_dir])
    try:
        t = c.timings
        print(
            f"\nmode={c.mode}"
            + (f" (fallback: {c.fallback_reason})" if c.fallback_reason else "")
            + f" head={c.head_ip} worker={c.worker_ip} service_host={c.service_host}"
            + f" cluster start {t['cluster_start']:.1f} s"
            + f" (head {t['head_start']:.1f} s, worker {t['worker_start']:.1f} s)"
        )
        c.ray_init(logging_level=logging.WARNING)
        yield c
    finally:
        c.stop()
        if session_ray:
            from mlops_ray.ray_runtime import ensure_ray

            ensure_ray(
                num_cpus=int(os.environ.get("MLOPS_RAY_TEST_CPUS", "2")), include_dashboard=False, address="local"
            )


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
    root = [s for s in socks if s["ns"] == "root" and not _is_private(s["addr"], set())]
    assert root == [], f"listeners of the cluster on non-loopback addresses of the host: {root}"
    if cluster.mode == "netns":
        # every Ray listener lives in the nodes' namespaces, the driver's (this process) in the head's
        assert {s["ns"] for s in socks} == {cluster.head_netns, cluster.worker_netns}, socks
        assert any(s["pid"] == os.getpid() and s["ns"] == cluster.head_netns for s in socks), socks
        # ... whose only interfaces are lo and the private veth: a wildcard there reaches nothing else
        import json
        import subprocess

        for ns, ip in ((cluster.head_netns, cluster.head_ip), (cluster.worker_netns, cluster.worker_ip)):
            links = json.loads(subprocess.run(["ip", "-j", "-n", ns, "addr"], capture_output=True, text=True).stdout)
            addrs = {a["local"] for link in links for a in link.get("addr_info", [])}
            assert {a for a in addrs if not _is_private(a, set())} == {ip}, (ns, addrs)
        specific = [s for s in socks if s["addr"] not in WILDCARDS]
        allowed = {cluster.head_ip, cluster.worker_ip}
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


def test_a_killed_worker_is_declared_dead_and_a_fresh_one_joins(cluster):
    import ray

    old = cluster.worker_node_id
    t_kill = cluster.kill_worker()
    t_dead = cluster.wait_node_state(old, "DEAD", timeout=60)
    detect = t_dead - t_kill
    new = cluster.restart_worker()
    assert new != old and cluster.worker_node_id == new
    states = {n["node_id"]: n["state"] for n in cluster.nodes()}
    assert states[old] == "DEAD" and states[new] == "ALIVE" and states[cluster.head_node_id] == "ALIVE"
    assert not {n["NodeID"]: n["Alive"] for n in ray.nodes()}[old]
    where = ray.remote(num_cpus=0.5)(where_am_i)
    assert ray.get(where.options(**cluster.pin("worker")).remote())[0] == new
    print(
        f"mode={cluster.mode}: killed worker declared DEAD after {detect:.2f} s "
        f"(health check {cluster._health_env['RAY_health_check_period_ms']} ms x "
        f"{cluster._health_env['RAY_health_check_failure_threshold']}); "
        f"new worker alive after {cluster.timings['worker_restart']:.2f} s"
    )
    assert detect < 20
