"""A real two-node Ray cluster on one machine whose nodes share neither an address nor a filesystem view.

Helper module for tests (not a conftest). :func:`start_two_node_cluster` returns a
:class:`TwoNodeCluster`; a module-scoped fixture looks like::

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        c = start_two_node_cluster(tmp_path_factory.mktemp("2n"), env={...})
        try:
            yield c
        finally:
            c.stop()

Run every command that starts Ray under ``flock /tmp/mlops-ray-ray-tests.lock`` (shared 2-core
machine); never ``ray stop`` (it kills every Ray process of the machine).

Modes (``cluster.mode``; print it, the tests say which one ran)
---------------------------------------------------------------

``netns`` (root with ``ip``/``unshare``/``nsenter``; what ``mode="auto"`` picks where it works)
    Each node runs in a network namespace of its own, made by the fixture: the head in
    ``mr-<pid>-<hex>h`` on ``head_ip``, the worker in ``mr-<pid>-<hex>w`` on ``worker_ip``. Both
    namespaces hang on a bridge in the root namespace (``mrb<hex>``) carrying a random private /29
    from 10.0.0.0/8 (10.213.x.y/29 first; checked against the host's routes and addresses):
    ``.1`` is the bridge's own address in the root namespace (``service_host``), ``.2`` the head,
    ``.3`` the worker. The namespaces have no default route: they reach each other and
    ``service_host``, nothing else; the host does not forward for them (``ip_forward`` untouched).
    The worker also has its own mount namespace (``private_root`` and every directory in ``hide``
    is an empty tmpfs there) and its own PID namespace (its ``/proc`` shows only its own processes,
    as on another machine: a driver started there with plain ``ray.init(address=...)`` attaches to
    the worker node). The head shares the host's filesystem and PIDs (like a driver on the head).

    **Why the head is not in the root namespace:** Ray 2.60 binds its gRPC servers (GCS, raylet
    node manager and object manager, every core worker and driver, dashboard agent) and its
    Prometheus endpoints (dashboard 44227, autoscaler 44217, agent metrics) to **all interfaces**
    unless the node address is exactly ``127.0.0.1`` (``GrpcServer(..., listen_to_localhost_only=
    node_ip_address == "127.0.0.1")``; ``is_localhost(ip)`` in the Python agents). There is no knob
    for one address. In the root namespace that is every public interface, with authentication
    off; inside a namespace whose only interfaces are ``lo`` and one private veth it reaches nothing
    outside. For the same reason a **driver** with a non-loopback node address listens on all
    interfaces of its namespace: run drivers in the head's namespace (:meth:`popen_on_head`,
    :meth:`head_cmd`, :meth:`ray_init` does it for the pytest process), never as a plain root
    namespace process with ``RAY_ADDRESS`` set. Pure HTTP/gRPC clients (``ray job submit``, the
    Serve CLI, ``JobSubmissionClient``, ``ray.util.state``) open no listener and may run anywhere.
``loopback`` (fallback: not root, tools missing, or namespace setup refused; ``mode="loopback"`` forces it)
    Two ``ray start`` nodes on ``127.0.0.1`` in the root namespace, the worker with its own
    ``--temp-dir``. Both listen on loopback only (Ray's ``127.0.0.1`` rule above). Ray refuses a
    joining node at ``127.0.0.1`` (it rewrites it to the machine's public address); the worker's
    ``ray start`` runs with that rewrite switched off (:data:`LOOPBACK_WORKER_START`).
    ``private_root`` is only a scratch directory both nodes see, ``hide`` hides nothing,
    ``popen_on_worker``/``popen_on_head`` start plain processes (a driver attaches to the head node
    unless it passes ``_temp_dir=str(cluster.worker_temp_dir)``). ``cluster.fallback_reason`` says
    why netns mode was not used.

Resources and pinning
---------------------
Both nodes get ``cpus_per_node`` logical CPUs (on 2 real cores: oversubscribed on purpose) and a
custom resource of 1: ``head_node`` on the head, ``worker_node`` on the worker. Pin with a fraction
(``cluster.pin("worker")`` = ``{"resources": {"worker_node": 0.001}}``, so pinned tasks do not
serialise) or with ``NodeAffinitySchedulingStrategy(cluster.worker_node_id, soft=False)``.

Services (S3 emulator, MLflow server, ...)
------------------------------------------
Bind them to ``cluster.service_host`` (netns: the bridge address in the root namespace; loopback:
``127.0.0.1``); both nodes reach it, a namespace's ``127.0.0.1`` is its own. The address exists
only once the namespaces do: choose the services' ports up front (:func:`free_ports_on`), pass
``env`` as a function of ``service_host`` (``lambda host: {"AWS_ENDPOINT_URL_S3":
f"http://{host}:{port}"}``), and bind the services once the cluster is up (or pass their URLs
through ``runtime_env={"env_vars": ...}`` of a driver). A socket that should live in the head's
namespace instead (e.g. a server only the cluster reaches) can be created under ``with
cluster.in_head_netns():`` (affects the calling thread only).

Environment
-----------
* ``env`` given to :func:`start_two_node_cluster` goes to **both** ``ray start`` processes (and so
  to every raylet, worker, actor and job driver of the cluster: Ray workers inherit the raylet's
  environment), to ``restart_worker``, to :meth:`TwoNodeCluster.env` and so to
  ``popen_on_head``/``popen_on_worker``. Put there what tasks need on every node, e.g.
  ``AWS_ENDPOINT_URL_S3=http://<service_host>:PORT``, ``AWS_ACCESS_KEY_ID``/
  ``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION``, ``MLFLOW_TRACKING_URI``, ``MLOPS_RAY_HOME``.
  What is set only in the pytest process or a driver reaches workers only through ``runtime_env``.
* Always set for the cluster and its clients: ``RAY_AUTH_MODE=disabled`` (the project's test
  convention; the Serve CLI and job client must agree with the cluster); free ports per node for
  Ray Serve's fixed-port listeners (HAProxy stats/metrics, fallback proxy) and the head's fixed
  metrics ports; a private HAProxy directory per node; the GCS health check at
  ``health_check_period_ms`` x ``health_check_failure_threshold`` (default 1000 ms x 3: a killed
  worker was declared dead after 2.3-3.3 s here; Ray's defaults in ``ray_config_def.h``, 3000 ms x 5,
  would mean ~15 s, not measured). Values in ``env`` win.
* :meth:`TwoNodeCluster.env`: the environment for a driver or CLI subprocess: ``RAY_ADDRESS`` (GCS
  address ``head_ip:port``), ``RAY_AUTH_MODE=disabled``, the cluster's ``env``, this venv's ``bin``
  first on ``PATH``. No node-address variable is needed (Ray 2.60 has none): a driver attaches to a
  node whose raylet runs on its host (found in ``/proc``), preferring the head node. The job API's
  address is ``cluster.dashboard_url``.
* :meth:`TwoNodeCluster.ray_init`: ``ray.init`` for the pytest process itself (netns: inside the
  head's namespace, ``_node_ip_address=head_ip``). Ray allows one cluster per process: shut down the
  session's local Ray first (``tests/integration/test_multinode.py`` swaps and restores it).

Serve on two nodes: each node runs a proxy; in loopback mode both share one port space, so deploy
with ``proxy_location: HeadOnly`` (or per-node ports) there.

Failure injection
-----------------
:meth:`~TwoNodeCluster.kill_worker` SIGKILLs every process of the worker node (netns: every
process in its namespace, drivers started by ``popen_on_worker`` included) and returns the
``time.monotonic()`` of the kill; :meth:`~TwoNodeCluster.wait_node_state` returns when Ray's node
table says ``DEAD``; :meth:`~TwoNodeCluster.restart_worker` starts a fresh worker node in the same
namespace (new empty private tmpfs, new node id, new ``--temp-dir``).

Cleanup
-------
:meth:`~TwoNodeCluster.stop` is idempotent and also registered with ``atexit``: it disconnects this
process if it is a driver of the cluster, SIGKILLs every process of both nodes (never by name:
netns mode by namespace, loopback mode by the node's private temp dir in the command line plus the
process tree), deletes the namespaces (and with them the veth pairs), the bridge and the temp dirs.
A run killed before its cleanup (SIGKILL of pytest) is reaped by the next
:func:`start_two_node_cluster`: namespaces ``mr-<pid>-*``, bridges ``mrb*`` and temp dirs
``/tmp/mr-<pid>-*`` whose ``<pid>`` is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = Path(sys.executable).parent / "ray"
PREFIX = "mr-"  # namespaces mr-<pid>-<hex>{h,w}, temp dirs /tmp/mr-<pid>-<hex> (unix socket paths <= 107 bytes)
HEAD_RESOURCE, WORKER_RESOURCE = "head_node", "worker_node"
# Ray Serve's fixed-port listeners (as tests/e2e/_cluster.py SERVE_PORT_ENV) and the head's fixed metrics ports.
SERVE_PORT_ENV = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
HEAD_METRIC_PORT_ENV = ("DASHBOARD_METRIC_PORT", "AUTOSCALER_METRIC_PORT")  # 44227, 44217 by default
HAPROXY_PATH_ENV = (
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC",
    "RAY_SERVE_HAPROXY_SOCKET_PATH",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH",
)
# Set by the project's local-cluster setup in the pytest process: that cluster's values, not ours.
INHERITED_LOCAL_ENV = ("RAY_ADDRESS", "MLOPS_RAY_CLUSTER_ENV_PID", *SERVE_PORT_ENV, *HAPROXY_PATH_ENV)
# "0": get_node_ip_address() is 127.0.0.1 and a node at 127.0.0.1 stays there, but `ray start --address` refuses.
CLUSTER_SWITCH_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# `ray start --head` options with fixed defaults (as tests/e2e/_cluster.py head_ports()).
HEAD_PORT_OPTIONS = ("port", "dashboard-port", "ray-client-server-port", "dashboard-agent-listen-port")
START_TIMEOUT_S = 120.0
CLONE_NEWNET = 0x40000000
# `ray start` for a worker joining at 127.0.0.1: Ray rewrites a given 127.0.0.1 to the machine's public
# address (services.resolve_ip_for_localhost) when multi-node is enabled, and refuses to join when it is
# not; keep the address as given, and let the node's own processes see the single-machine switch.
LOOPBACK_WORKER_START = (
    "import os, sys\n"
    "from ray._private import services\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    f"os.environ[{CLUSTER_SWITCH_ENV!r}] = '0'\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "sys.exit(main())\n"
)


class ClusterError(RuntimeError):
    """The cluster could not be started or a node did not reach the state asked for."""


# ---------------------------------------------------------------------------------------- helpers
def _run(argv: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise ClusterError(f"{shlex.join(argv)} exited {r.returncode}: {(r.stdout + r.stderr).strip()[-3000:]}")
    return r


def free_ports_on(host: str, n: int) -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (in the calling thread's network namespace), outside
    Ray's worker and the kernel's ephemeral ranges where possible (:func:`mlops_ray.ports.free_ports`):
    they are bound seconds later by another process."""
    from mlops_ray.ports import free_ports

    return free_ports(n, host)


@contextlib.contextmanager
def thread_in_netns(name: str):
    """Run the calling **thread** in network namespace ``name`` (``/run/netns/<name>``) for the block.

    Sockets created inside belong to that namespace for their whole life; threads started inside
    inherit it. Other threads of the process are untouched.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {name}: {os.strerror(err)}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:  # pragma: no cover - would leave the thread in the namespace
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the original network namespace: {os.strerror(err)}")
    finally:
        os.close(own)


def _own_lineage() -> set[int]:
    """This process and its ancestors: never killed by a marker or namespace match."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def _procs_with(marker: str) -> list[psutil.Process]:
    """Processes with ``marker`` in an argument of their command line (not this process or its parents)."""
    skip = _own_lineage()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid not in skip and any(marker in arg for arg in (p.info["cmdline"] or [])):
            found.append(p)
    return found


def _with_descendants(procs) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {p.pid: p for p in procs}
    for p in list(seen.values()):
        try:
            for c in p.children(recursive=True):
                seen.setdefault(c.pid, c)
        except psutil.Error:
            pass
    for pid in _own_lineage():
        seen.pop(pid, None)
    return list(seen.values())


def _processes(pids) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.Error:
            pass
    return procs


def _sigkill(procs, wait: float = 10.0) -> None:
    procs = list(procs)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=wait)


def netns_pids(ns: str) -> list[int]:
    """Pids of every process in network namespace ``ns`` (``ip netns pids``), this process excluded."""
    r = _run(["ip", "netns", "pids", ns], check=False)
    skip = _own_lineage()
    return [int(x) for x in r.stdout.split() if int(x) not in skip] if r.returncode == 0 else []


def _kill_netns(ns: str, wait: float = 10.0) -> None:
    """SIGKILL every process in network namespace ``ns`` until none is left."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pids = netns_pids(ns)
        if not pids:
            return
        _sigkill(_processes(pids), wait=2.0)
    raise ClusterError(f"processes left in namespace {ns}: {netns_pids(ns)}")


def _owner_alive(name: str) -> bool:
    m = re.match(re.escape(PREFIX) + r"(\d+)-", name)
    return not m or psutil.pid_exists(int(m.group(1)))


def reap_stale() -> list[str]:
    """Remove what an earlier run killed before its cleanup left behind: namespaces ``mr-<pid>-*`` and
    temp dirs ``/tmp/mr-<pid>-*`` whose ``<pid>`` no longer exists (with their processes), and
    bridges ``mrb<hex>`` left without ports. Returns what was removed."""
    reaped = []
    if os.geteuid() == 0 and shutil.which("ip"):
        for line in _run(["ip", "netns", "list"], check=False).stdout.splitlines():
            name = line.split(" ")[0]
            if name.startswith(PREFIX) and not _owner_alive(name):
                try:
                    _kill_netns(name)
                except ClusterError:
                    pass
                _run(["ip", "netns", "del", name], check=False)
                reaped.append(name)
        try:
            links = json.loads(_run(["ip", "-j", "link", "show", "type", "bridge"], check=False).stdout or "[]")
        except ValueError:
            links = []
        for link in links:
            name = link.get("ifname", "")
            if re.fullmatch(r"mrb[0-9a-f]{6}", name):
                ports = _run(["ip", "-j", "link", "show", "master", name], check=False).stdout.strip()
                if ports in ("", "[]") and not any(Path("/run/netns").glob(f"{PREFIX}*-{name[3:]}?")):
                    _run(["ip", "link", "del", name], check=False)
                    reaped.append(name)
    for d in Path("/tmp").glob(f"{PREFIX}*"):
        if d.is_dir() and not _owner_alive(d.name):
            _sigkill(_with_descendants(_procs_with(str(d))))
            shutil.rmtree(d, ignore_errors=True)
            reaped.append(str(d))
    return reaped


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    try:
        for r in json.loads(_run(["ip", "-j", "-4", "route", "show", "table", "all"]).stdout or "[]"):
            dst = r.get("dst", "default")
            if dst != "default":
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
        for link in json.loads(_run(["ip", "-j", "-4", "addr"]).stdout or "[]"):
            for a in link.get("addr_info", []):
                nets.append(ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False))
    except (ValueError, KeyError, ClusterError):
        pass
    return nets


def _pick_subnet() -> ipaddress.IPv4Network:
    """A random private /29 (10.213.x.y/29 first, then anywhere in 10/8) overlapping no route or address here."""
    used = _used_networks()
    for i in range(400):
        second = 213 if i < 200 else random.randint(16, 254)
        net = ipaddress.ip_network(f"10.{second}.{random.randint(0, 255)}.{8 * random.randint(0, 31)}/29")
        if not any(net.overlaps(u) for u in used):
            return net
    raise ClusterError("no free private /29 in 10.0.0.0/8")


def _netns_unavailable() -> str | None:
    """Why network namespaces cannot be used here (None: they can)."""
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()})"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH"
    return None


# ---------------------------------------------------------------------------------------- probes
# Functions for Ray tasks that check where they ran and what they see. Defined here, not in a test
# module: Ray pickles module-level functions by reference, and workers import this module as
# `tests._multinode` (the repository root is on their sys.path), not a test module pytest put on its own.
def where_am_i(sleep_s: float = 0.0) -> tuple[str, str]:
    """(node id, task id) of the task or actor calling it, from Ray's runtime context (after ``sleep_s``)."""
    import ray

    time.sleep(sleep_s)

    ctx = ray.get_runtime_context()
    return ctx.get_node_id(), ctx.get_task_id()


def path_exists(path: str) -> bool:
    return os.path.exists(path)


def write_text(path: str, text: str) -> list[str]:
    """Write ``text`` to ``path``; returns the sorted names in its directory."""
    p = Path(path)
    p.write_text(text)
    return sorted(os.listdir(p.parent))


def http_get(url: str, timeout: float = 10) -> str:
    """Body of ``GET url`` (text), or ``"error: ..."`` when it cannot be reached."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read().decode()
    except OSError as e:
        return f"error: {e!r}"


def mount_fstype(path: str) -> str:
    """Filesystem type of the mount ``path`` is on, from the calling process's own mount table."""
    best, fstype = "", ""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mount_point = left.split()[4]
        if (path == mount_point or path.startswith(mount_point.rstrip("/") + "/")) and len(mount_point) >= len(best):
            best, fstype = mount_point, right.split()[0]
    return fstype


# ---------------------------------------------------------------------------------------- cluster
@dataclass
class TwoNodeCluster:
    """A running two-node Ray cluster (see the module docstring).

    mode: ``"netns"`` or ``"loopback"``.
    address: GCS address ``head_ip:port`` (``ray.init(address=...)``, ``RAY_ADDRESS``).
    head_ip / worker_ip: the nodes' addresses (their NodeManagerAddress); the same in loopback mode.
    service_host: where services both nodes reach must bind (netns: the bridge's root-namespace
        address; loopback: 127.0.0.1).
    dashboard_url: ``http://head_ip:port`` (job API, state API).
    head_node_id / worker_node_id: Ray node ids (worker_node_id follows restart_worker).
    private_root: netns: an empty private tmpfs in the worker's view, the caller's (other) directory
        everywhere else; loopback: a plain scratch directory both nodes see.
    """

    mode: str
    address: str
    head_ip: str
    worker_ip: str
    service_host: str
    dashboard_url: str
    head_node_id: str
    worker_node_id: str
    private_root: Path
    fallback_reason: str | None = None  # why loopback mode ran under mode="auto"
    hide: tuple[Path, ...] = ()  # further directories the worker sees as empty tmpfs (netns mode)
    # seconds: head_start, worker_start, cluster_start (head + worker), worker_restart (the last one)
    timings: dict[str, float] = field(default_factory=dict)
    head_netns: str | None = None
    worker_netns: str | None = None
    bridge: str | None = None
    tmp_root: Path = Path()  # /tmp/mr-<pid>-<hex>: the nodes' Ray temp dirs h, w1, w2, ... and HAProxy dirs
    log_dir: Path = Path()  # `ray start` output of the head and of each worker start
    head_ports: dict[str, int] = field(default_factory=dict)
    worker_temp_dir: Path = Path()  # the current worker node's Ray --temp-dir
    dead_worker_ids: list[str] = field(default_factory=list)
    _cpus: int = 2
    _user_env: dict = field(default_factory=dict, repr=False)
    _health_env: dict = field(default_factory=dict, repr=False)
    _worker_proc: subprocess.Popen | None = field(default=None, repr=False)
    _worker_log: object = field(default=None, repr=False)
    _worker_starts: int = 0
    _stopped: bool = False

    # ------------------------------------------------------------------ environment
    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in INHERITED_LOCAL_ENV}
        env["RAY_AUTH_MODE"] = "disabled"
        env.setdefault("RAY_DEDUP_LOGS", "0")
        bindir = str(Path(sys.executable).parent)
        if bindir not in env.get("PATH", "").split(os.pathsep):  # `python`, `ray`: this venv's, as when activated
            env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        return env

    def _node_env(self, node_dir: Path, head: bool) -> dict[str, str]:
        """Environment of one `ray start`: base + health check + per-node ports and HAProxy dir + user env."""
        env = self._base_env()
        env.update(self._health_env)
        # "0" (the project's local clusters set it in the pytest process) would forbid a node to join;
        # a loopback head needs it to stay on 127.0.0.1 (the loopback worker's start sets it itself).
        env[CLUSTER_SWITCH_ENV] = "0" if (head and self.mode == "loopback") else "1"
        names = SERVE_PORT_ENV + (HEAD_METRIC_PORT_ENV if head else ())
        env.update(zip(names, map(str, free_ports_on("127.0.0.1", len(names)))))
        hap = node_dir.parent / f"hap-{node_dir.name}"
        hap.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = (hap / "haproxy.cfg", hap / "admin.sock", hap, hap / "server-state", hap / "metrics.sock")
        env.update(zip(HAPROXY_PATH_ENV, map(str, paths)))
        env.update(self._user_env)
        return env

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a driver / CLI subprocess: ``RAY_ADDRESS`` (GCS address), ``RAY_AUTH_MODE=disabled``,
        the cluster's ``env``, this venv's bin first on PATH, and ``extra``. Start drivers with
        :meth:`popen_on_head` / :meth:`popen_on_worker` (see the module docstring: a root-namespace driver
        in netns mode would listen on all interfaces)."""
        env = self._base_env()
        env.update(self._user_env)  # RAY_AUTH_MODE=disabled (from _base_env) unless the cluster's env says otherwise
        env["RAY_ADDRESS"] = self.address
        if self.mode == "loopback":  # else Ray rewrites the address 127.0.0.1 to the machine's public one
            env[CLUSTER_SWITCH_ENV] = "0"
        env.update(extra)
        return env

    def pin(self, node: str, amount: float = 0.001) -> dict:
        """Ray options pinning a task/actor to ``node`` ("head" or "worker") by its custom resource."""
        if node not in ("head", "worker"):
            raise ValueError(f"node must be 'head' or 'worker', not {node!r}")
        return {"resources": {HEAD_RESOURCE if node == "head" else WORKER_RESOURCE: amount}}

    # ------------------------------------------------------------------ drivers
    @contextlib.contextmanager
    def in_head_netns(self):
        """The calling thread in the head's network namespace for the block (netns mode; no-op in loopback)."""
        if self.mode != "netns":
            yield
            return
        with thread_in_netns(self.head_netns):
            yield

    def ray_init(self, **kw):
        """``ray.init`` of this process as a driver of the cluster on the head node; returns ``ray``.

        netns mode: called inside the head's network namespace (:meth:`in_head_netns`), so that the
        driver's gRPC server (all interfaces, see the module docstring) and Ray's threads live there;
        the calling thread returns to its namespace afterwards (it reaches the cluster over the bridge).
        """
        import ray

        if ray.is_initialized():
            current = ray.get_runtime_context().gcs_address
            if current == self.address:
                return ray
            raise ClusterError(f"this process is already a driver of {current}: ray.shutdown() it first")
        os.environ["RAY_AUTH_MODE"] = "disabled"
        kw.setdefault("address", self.address)
        if self.mode == "netns":
            kw.setdefault("_node_ip_address", self.head_ip)
        else:
            # ray.init rewrites the address 127.0.0.1 to the machine's public one unless Ray is in
            # single-machine mode (as mlops_ray.compat.keep_node_on_loopback does for local clusters)
            from ray._private import ray_constants

            os.environ[CLUSTER_SWITCH_ENV] = "0"
            ray_constants.ENABLE_RAY_CLUSTER = False
        with self.in_head_netns():
            ray.init(**kw)
        return ray

    def head_cmd(self, argv) -> list[str]:
        """``argv`` run in the head's network namespace (netns mode; unchanged in loopback mode)."""
        argv = [str(a) for a in argv]
        return ["ip", "netns", "exec", self.head_netns, *argv] if self.mode == "netns" else argv

    def popen_on_head(self, argv, env: dict | None = None, **kw) -> subprocess.Popen:
        """Start ``argv`` on the head node (its network namespace; the host's filesystem and PIDs), with
        :meth:`env` plus ``env``: the place for drivers and CLI commands that call ``ray.init``."""
        return subprocess.Popen(self.head_cmd(argv), env=self.env(**(env or {})), **kw)

    def run_on_head(self, argv, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """:meth:`popen_on_head` and wait: a CompletedProcess with text stdout/stderr."""
        return _communicate(self.popen_on_head(argv, env, **_pipes(kw)), argv, timeout)

    def popen_on_worker(self, argv, env: dict | None = None, cwd=None, **kw) -> subprocess.Popen:
        """Start ``argv`` on the worker node: netns mode inside its network, mount and PID namespaces
        (``nsenter``; it sees the private tmpfs, reaches only the head and ``service_host``); loopback
        mode a plain process. Environment: :meth:`env` plus ``env``. Killed by :meth:`kill_worker`
        and :meth:`stop` (netns mode)."""
        full_env = self.env(**(env or {}))
        cwd = str(cwd or os.getcwd())
        if self.mode != "netns":
            return subprocess.Popen([str(a) for a in argv], env=full_env, cwd=cwd, **kw)
        init = self._worker_init_pid()
        cmd = ["nsenter", f"--target={init}", "--net", "--mount", "--pid", f"--wd={cwd}", "--", *map(str, argv)]
        return subprocess.Popen(cmd, env=full_env, **kw)

    def run_on_worker(self, argv, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """:meth:`popen_on_worker` and wait: a CompletedProcess with text stdout/stderr."""
        return _communicate(self.popen_on_worker(argv, env, **_pipes(kw)), argv, timeout)

    def _worker_init_pid(self) -> int:
        """Root-namespace pid of the worker's PID-namespace init (the process unshare forked)."""
        if self._worker_proc is None or self._worker_proc.poll() is not None:
            raise ClusterError("the worker node is not running (killed? call restart_worker)")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                children = psutil.Process(self._worker_proc.pid).children()
            except psutil.Error:
                children = []
            if children:
                return children[0].pid
            time.sleep(0.05)
        raise ClusterError("the worker's unshare has no child process")

    # ------------------------------------------------------------------ nodes
    def nodes(self) -> list[dict]:
        """Ray's node table (``ray.util.state.list_nodes`` through the dashboard; needs no driver)."""
        from ray.util.state import list_nodes

        out = list_nodes(address=self.dashboard_url, detail=True, limit=1000, raise_on_missing_output=False)
        return [n if isinstance(n, dict) else vars(n) for n in out]

    def node_state(self, node_id: str) -> str | None:
        """``ALIVE``/``DEAD`` for ``node_id`` (None: unknown to Ray)."""
        for n in self.nodes():
            if n["node_id"] == node_id:
                return n["state"]
        return None

    def wait_node_state(self, node_id: str, state: str = "DEAD", timeout: float = 60, poll: float = 0.1) -> float:
        """Wait until Ray's node table has ``node_id`` in ``state``; returns time.monotonic() when first seen so."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = self.node_state(node_id)
            except Exception as e:  # noqa: BLE001 - the dashboard can be briefly unavailable
                last = repr(e)
            if last == state:
                return time.monotonic()
            time.sleep(poll)
        raise ClusterError(f"node {node_id} not {state} within {timeout} s (last: {last})")

    def _wait_new_worker(self, proc: subprocess.Popen, known: set[str], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"the worker's `ray start` exited {proc.returncode}: {self._worker_output()}")
            try:
                nodes = self.nodes()
            except Exception:  # noqa: BLE001 - not up yet
                nodes = []
            for n in nodes:
                total = n.get("resources_total") or {}
                if n["state"] == "ALIVE" and n["node_id"] not in known and WORKER_RESOURCE in total:
                    return n["node_id"]
            time.sleep(0.2)
        hint = " (netns mode: is bridged traffic filtered here? see bridge-nf-call-iptables)" if self.bridge else ""
        raise ClusterError(f"no new alive worker node within {timeout} s{hint}: {self._worker_output()}")

    def _worker_output(self) -> str:
        try:
            return (self.log_dir / f"worker-{self._worker_starts}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return "(no output)"

    def _start_worker(self, timeout: float = START_TIMEOUT_S) -> str:
        t0 = time.monotonic()
        self._worker_starts += 1
        n = self._worker_starts
        self.worker_temp_dir = self.tmp_root / f"w{n}"
        self.worker_temp_dir.mkdir(parents=True, exist_ok=True)
        env = self._node_env(self.worker_temp_dir, head=False)
        options = [
            "start",
            f"--address={self.address}",
            f"--node-ip-address={self.worker_ip}",
            f"--num-cpus={self._cpus}",
            f"--resources={json.dumps({WORKER_RESOURCE: 1})}",
            f"--temp-dir={self.worker_temp_dir}",
            f"--dashboard-agent-listen-port={free_ports_on('127.0.0.1', 1)[0]}",
            "--disable-usage-stats",
            "--block",
        ]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"worker-{n}.log", "wb")  # noqa: SIM115 - closed by restart_worker/stop
        if self.mode == "netns":
            # Own mount namespace (a private tmpfs over private_root and `hide`) and PID namespace (its
            # /proc shows its own processes; its init's death kills them all). --kill-child: the node
            # also dies with this unshare process.
            mounts = " && ".join(
                f"mount -t tmpfs -o mode=0755,size=1g mr-private {shlex.quote(str(p))}"
                for p in (self.private_root, *self.hide)
            )
            script = f"set -e; {mounts}; exec {shlex.join([str(RAY), *options])}"
            argv = ["ip", "netns", "exec", self.worker_netns, "unshare", "--mount", "--propagation", "private"]
            argv += ["--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c", script]
        else:
            argv = [sys.executable, "-c", LOOPBACK_WORKER_START, *options]
        self._worker_log = log
        self._worker_proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        known = {self.head_node_id, *self.dead_worker_ids, *([self.worker_node_id] if self.worker_node_id else [])}
        node_id = self._wait_new_worker(self._worker_proc, known, timeout)
        self.worker_node_id = node_id
        self.timings["worker_start" if n == 1 else "worker_restart"] = time.monotonic() - t0
        return node_id

    def head_pids(self) -> list[int]:
        """Pids of the head node's processes (netns: its namespace; loopback: its temp dir + tree)."""
        if self.mode == "netns":
            return netns_pids(self.head_netns) if self.head_netns else []
        return [p.pid for p in _with_descendants(_procs_with(str(self.tmp_root / "h")))]

    def worker_pids(self) -> list[int]:
        """Pids of the current worker node's processes (netns: its namespace; loopback: `ray start` tree + temp dir)."""
        if self.mode == "netns":
            return netns_pids(self.worker_netns) if self.worker_netns else []
        procs = []
        if self._worker_proc is not None:
            procs += _processes([self._worker_proc.pid])
        procs += _procs_with(str(self.worker_temp_dir))
        return [p.pid for p in _with_descendants(procs)]

    def kill_worker(self) -> float:
        """SIGKILL the worker node's raylet and every process of that node; returns time.monotonic() of the kill."""
        procs = _processes(self.worker_pids())
        if not procs:
            raise ClusterError("no process of the worker node to kill")
        t = time.monotonic()
        for p in procs:  # one pass, raylet included, before anything can react
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=10)
        if self.mode == "netns":
            _kill_netns(self.worker_netns)  # anything forked meanwhile
        else:
            _sigkill(_processes(self.worker_pids()))
        if self._worker_proc is not None:
            self._worker_proc.wait(10)
        if self.worker_node_id and self.worker_node_id not in self.dead_worker_ids:
            self.dead_worker_ids.append(self.worker_node_id)
        return t

    def restart_worker(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start a fresh worker node (same namespace, new empty private tmpfs) and wait until Ray has it
        alive; returns (and sets) the new ``worker_node_id``. Kills the current worker first if it runs."""
        if self._worker_proc is not None and self._worker_proc.poll() is None:
            self.kill_worker()
        if self._worker_log is not None:
            self._worker_log.close()
        return self._start_worker(timeout)

    # ------------------------------------------------------------------ listening sockets
    def listening_sockets(self, extra_pids=()) -> list[dict]:
        """TCP listeners of the cluster's processes (and of ``extra_pids``, e.g. this process as a driver):
        ``{"ns", "addr", "port", "pid", "process"}``, ``ns`` being ``root`` or a namespace name.
        In netns mode every listener of the namespaces is listed (all belong to the cluster)."""
        scopes = []
        if self.mode == "netns":
            scopes.append(("root", [], set(self.head_pids()) | set(self.worker_pids()) | set(extra_pids)))
            scopes.append((self.head_netns, ["ip", "netns", "exec", self.head_netns], None))
            scopes.append((self.worker_netns, ["ip", "netns", "exec", self.worker_netns], None))
        else:
            scopes.append(("root", [], set(self.head_pids()) | set(self.worker_pids()) | set(extra_pids)))
        found = []
        for ns, prefix, pids in scopes:
            for line in _run([*prefix, "ss", "-ltnpH"]).stdout.splitlines():
                parts = line.split()
                if len(parts) < 4:
                    continue
                addr, _, port = parts[3].rpartition(":")
                owners = re.findall(r'\("([^"]*)",pid=(\d+)', line) or [("?", "0")]
                for name, pid in owners:
                    if pids is None or int(pid) in pids:
                        found.append({"ns": ns, "addr": addr, "port": int(port), "pid": int(pid), "process": name})
        return found

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Disconnect this process if it drives the cluster, kill every process of both nodes, delete the
        namespaces (and veth pairs), the bridge and the temp dirs. Idempotent; registered with atexit."""
        if self._stopped:
            return
        self._stopped = True
        errors = []
        ray = sys.modules.get("ray")
        if ray is not None and self.address:
            try:
                if ray.is_initialized() and ray.get_runtime_context().gcs_address == self.address:
                    ray.shutdown()
            except Exception as e:  # noqa: BLE001 - keep cleaning
                errors.append(f"ray.shutdown: {e!r}")
        for _ in range(3):  # twice more for processes forked while killing (a raylet restarting a worker)
            procs = _processes(self.worker_pids()) + _processes(self.head_pids())
            if not procs:
                break
            _sigkill(procs)
        if self._worker_proc is not None:
            try:
                self._worker_proc.kill()
                self._worker_proc.wait(10)
            except Exception:  # noqa: BLE001
                pass
        if self._worker_log is not None:
            self._worker_log.close()
        errors += _teardown_network(self.head_netns, self.worker_netns, self.bridge)
        if self.tmp_root != Path():
            shutil.rmtree(self.tmp_root, ignore_errors=True)
        atexit.unregister(self.stop)
        if errors:
            raise ClusterError(f"cleanup of the two-node cluster: {errors}")


def _pipes(kw: dict) -> dict:
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    return kw


def _communicate(p: subprocess.Popen, argv, timeout: float) -> subprocess.CompletedProcess:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise ClusterError(f"{argv} timed out after {timeout} s: {(out or '')[-2000:]}{(err or '')[-2000:]}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _teardown_network(head_ns: str | None, worker_ns: str | None, bridge: str | None) -> list[str]:
    errors = []
    for ns in (worker_ns, head_ns):
        if not ns:
            continue
        try:
            _kill_netns(ns)
        except ClusterError as e:
            errors.append(str(e))
        r = _run(["ip", "netns", "del", ns], check=False)  # also destroys the veth pair with an end in it
        if r.returncode != 0 and Path(f"/run/netns/{ns}").exists():
            errors.append(f"ip netns del {ns}: {r.stderr.strip()}")
    if bridge and _run(["ip", "link", "show", bridge], check=False).returncode == 0:
        r = _run(["ip", "link", "del", bridge], check=False)
        if r.returncode != 0:
            errors.append(f"ip link del {bridge}: {r.stderr.strip()}")
    return errors


def _setup_netns(tag: str) -> dict:
    """Bridge ``mrb<hex>`` (service address .1/29) and namespaces ``mr-<tag>h`` (.2) / ``mr-<tag>w`` (.3),
    each with ``lo`` up and a veth whose root end is on the bridge; no default route anywhere."""
    hexpart = tag.rsplit("-", 1)[-1]
    bridge = f"mrb{hexpart}"  # interface names <= 15 characters
    net = _pick_subnet()
    service_ip, head_ip, worker_ip = (str(h) for h in list(net.hosts())[:3])
    plan = dict(bridge=bridge, service_ip=service_ip, head_ip=head_ip, worker_ip=worker_ip)
    plan.update(head_netns=f"{PREFIX}{tag}h", worker_netns=f"{PREFIX}{tag}w")
    nodes = ((plan["head_netns"], head_ip, f"mrh{hexpart}"), (plan["worker_netns"], worker_ip, f"mrw{hexpart}"))
    try:
        for ns, _, _ in nodes:  # namespaces first: reap_stale() leaves a bridge alone while its namespaces exist
            _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{service_ip}/29", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])
        for ns, ip, end in nodes:
            _run(["ip", "link", "add", end, "type", "veth", "peer", "name", "eth0", "netns", ns])
            _run(["ip", "link", "set", end, "master", bridge])
            _run(["ip", "link", "set", end, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/29", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # the worker's start-up in miniature: mount + PID namespaces must work here too
        probe = ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "true"]
        _run(["ip", "netns", "exec", plan["worker_netns"], *probe])
    except Exception:
        _teardown_network(plan["head_netns"], plan["worker_netns"], bridge)
        raise
    return plan


def start_two_node_cluster(
    tmp_dir: Path,
    cpus_per_node: int = 2,
    mode: str = "auto",
    env: dict | Callable[[str], dict] | None = None,
    hide: tuple[Path, ...] | list[Path] = (),
    health_check_period_ms: int = 1000,
    health_check_failure_threshold: int = 3,
) -> TwoNodeCluster:
    """Start a head and a worker node (see the module docstring) and wait until Ray has both alive.

    Args:
        tmp_dir: the caller's scratch directory (holds ``private_root`` and the `ray start` logs).
        cpus_per_node: logical CPUs of each node.
        mode: ``"auto"`` (netns where possible, else loopback), ``"netns"`` (fail if impossible), ``"loopback"``.
        env: environment added to both ``ray start`` processes (and to drivers started through the cluster),
            or a function of ``service_host`` returning it (that address exists only once the namespaces
            do: e.g. ``lambda host: {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}``).
        hide: existing directories the worker node sees as empty tmpfs (netns mode), e.g. the driver's
            workspace or pytest's base temp dir, so that a hidden dependency on them fails as on a real
            second machine. Never the repository, the venv or /tmp itself (the nodes' Ray temp dirs).
        health_check_period_ms, health_check_failure_threshold: the GCS's node health check.

    Raises:
        ClusterError: a node did not start (what was started is cleaned up).
    """
    if mode not in ("auto", "netns", "loopback"):
        raise ValueError(f"mode must be auto, netns or loopback, not {mode!r}")
    t0 = time.monotonic()
    reap_stale()
    tmp_dir = Path(tmp_dir)
    for p in hide:
        if not Path(p).is_dir():
            raise ClusterError(f"hide: {p} is not an existing directory (a tmpfs is mounted over it)")
    tag = f"{os.getpid()}-{random.getrandbits(24):06x}"
    tmp_root = Path("/tmp") / f"{PREFIX}{tag}"
    tmp_root.mkdir(mode=0o755)
    private_root = tmp_dir / "worker-private"
    private_root.mkdir(parents=True, exist_ok=True)
    reason, plan, chosen = None, None, mode
    if mode in ("auto", "netns"):
        reason = _netns_unavailable()
        if reason is None:
            try:
                plan = _setup_netns(tag)
                chosen = "netns"
            except (ClusterError, OSError, subprocess.TimeoutExpired) as e:
                reason = f"namespace setup failed: {e}"
        if plan is None:
            if mode == "netns":
                shutil.rmtree(tmp_root, ignore_errors=True)
                raise ClusterError(f"netns mode impossible here: {reason}")
            chosen = "loopback"
    if plan is None:
        plan = {"head_ip": "127.0.0.1", "worker_ip": "127.0.0.1", "service_ip": "127.0.0.1"}
    c = TwoNodeCluster(
        mode=chosen,
        address="",
        head_ip=plan["head_ip"],
        worker_ip=plan["worker_ip"],
        service_host=plan["service_ip"],
        dashboard_url="",
        head_node_id="",
        worker_node_id="",
        private_root=private_root,
        fallback_reason=reason if chosen == "loopback" and mode == "auto" else None,
        hide=tuple(Path(p) for p in hide) if chosen == "netns" else (),
        head_netns=plan.get("head_netns"),
        worker_netns=plan.get("worker_netns"),
        bridge=plan.get("bridge"),
        tmp_root=tmp_root,
        log_dir=tmp_dir / "ray-start-logs",
        _cpus=cpus_per_node,
        _user_env={k: str(v) for k, v in ((env(plan["service_ip"]) if callable(env) else env) or {}).items()},
        _health_env={
            "RAY_health_check_period_ms": str(health_check_period_ms),
            "RAY_health_check_failure_threshold": str(health_check_failure_threshold),
        },
    )
    atexit.register(c.stop)
    try:
        _start_head(c)
        c.timings["head_start"] = time.monotonic() - t0
        c._start_worker()
        c.timings["cluster_start"] = time.monotonic() - t0
    except BaseException:
        with contextlib.suppress(ClusterError):
            c.stop()
        raise
    return c


def _start_head(c: TwoNodeCluster) -> None:
    head_dir = c.tmp_root / "h"
    head_dir.mkdir()
    with c.in_head_netns():  # netns: the head's own port space
        ports = dict(zip(HEAD_PORT_OPTIONS, free_ports_on(c.head_ip, len(HEAD_PORT_OPTIONS))))
    c.head_ports = ports
    argv = [str(RAY), "start", "--head", *(f"--{k}={v}" for k, v in ports.items())]
    argv += [
        f"--node-ip-address={c.head_ip}",
        f"--dashboard-host={c.head_ip}",
        "--include-dashboard=true",
        f"--num-cpus={c._cpus}",
        f"--resources={json.dumps({HEAD_RESOURCE: 1})}",
        f"--temp-dir={head_dir}",
        "--disable-usage-stats",
    ]
    env = c._node_env(head_dir, head=True)
    r = subprocess.run(
        c.head_cmd(argv), env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL
    )
    c.log_dir.mkdir(parents=True, exist_ok=True)
    (c.log_dir / "head.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise ClusterError(f"`ray start --head` exited {r.returncode}: {(r.stdout + r.stderr)[-4000:]}")
    c.address = f"{c.head_ip}:{ports['port']}"
    c.dashboard_url = f"http://{c.head_ip}:{ports['dashboard-port']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            heads = [n for n in c.nodes() if n.get("is_head_node") and n["state"] == "ALIVE"]
        except Exception:  # noqa: BLE001 - dashboard still starting
            heads = []
        if heads:
            c.head_node_id = heads[0]["node_id"]
            return
        time.sleep(0.2)
    raise ClusterError(f"the head node is not alive in {c.dashboard_url}'s node table after 60 s")
