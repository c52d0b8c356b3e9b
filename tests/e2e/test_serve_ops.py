"""`mlops-ray serve` as an operator meets it: loopback only, two services per host, fast clean
shutdown (SIGINT, a second signal, SIGKILL) with nothing left behind, reload finding its own
cluster, and a replica killed under load.

Each service is a real `mlops-ray serve` process with its own local Ray cluster; models are
trained once per module on the test session's cluster. Load targets 127.0.0.1 only, bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from _cluster import free_port
from _service import FEATURES, raw_config, train_and_promote

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ fixtures
def _train_home(home: Path, src: Path, model_name: str, rounds: int) -> Path:
    """A workspace with ``model_name`` v1 promoted to champion; returns the config path."""
    serve = {"port": free_port(), "num_cpus_per_replica": 0.25, "poll_interval_s": 2.0}
    raw = raw_config("ops", src, model_name, rounds, serve)
    train_and_promote(raw, home)
    path = home / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def homes(ray_session, tmp_path_factory):
    from mlops_ray.data.generate import generate_dataset

    src = tmp_path_factory.mktemp("ops-src")
    generate_dataset(src, 3000, shards=2, seed=5)
    root = tmp_path_factory.mktemp("ops")
    return {
        "a": _train_home(root / "a", src, "model-a", 20),
        "b": _train_home(root / "b", src, "model-b", 10),
    }


def _config_on_free_port(config: Path, tmp_path: Path, **serve) -> tuple[Path, str]:
    raw = yaml.safe_load(config.read_text())
    raw["serve"].update(port=free_port(), **serve)
    out = tmp_path / f"{config.parent.name}-{raw['serve']['port']}.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out, f"http://127.0.0.1:{raw['serve']['port']}"


class Service:
    """A `mlops-ray serve` process in its own process group; stdout collected by a thread."""

    def __init__(self, config: Path, home: Path):
        env = dict(os.environ, RAY_AUTH_MODE="disabled", MLOPS_RAY_HOME=str(home), MLOPS_RAY_PROGRESS="0")
        for var in ("RAY_ADDRESS",) + tuple(k for k in env if k.startswith("RAY_SERVE_") and k.endswith("_PORT")):
            env.pop(var, None)  # the service chooses its own ports
        self.config, self.home = config, home
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlops_ray.cli", "serve", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.serving = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("serving "):
                self.serving.set()

    def wait_serving(self, timeout=180):
        """Until the service prints ``serving``; fails at once when the process ends first."""
        deadline = time.monotonic() + timeout
        while not self.serving.wait(0.5):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.5)  # the reader thread's last lines
                raise AssertionError(f"exit {self.proc.poll()}: " + "".join(self.lines)[-4000:])

    def tree(self) -> list[psutil.Process]:
        """The service process, every descendant, and HAProxy processes started for it."""
        me = psutil.Process(self.proc.pid)
        procs = [me, *me.children(recursive=True)]
        mark = f"/mlrh-{self.proc.pid}/"
        for p in psutil.process_iter(["cmdline"]):
            if mark in " ".join(p.info["cmdline"] or []) and p not in procs:
                procs.append(p)
        return procs

    def output(self) -> str:
        return "".join(self.lines)


def _gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _listeners(procs: list[psutil.Process]) -> list[tuple[str, int, str]]:
    out = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.append((c.laddr.ip, c.laddr.port, " ".join(p.cmdline())[:80]))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


# ------------------------------------------------------------------ tests
class TestOneService:
    """Checks that need a running service but do not end it share one (2 replicas): started once, stopped
    after the class (a service takes ~20 s to start); the replica kill, then SIGTERM, run last."""

    @pytest.fixture(scope="class")
    def service(self, homes, tmp_path_factory):
        config, url = _config_on_free_port(homes["a"], tmp_path_factory.mktemp("one"), min_replicas=2, max_replicas=2)
        svc = Service(config, homes["a"].parent)
        try:
            svc.wait_serving()
            yield svc, config, url
        finally:
            svc.proc.send_signal(signal.SIGTERM)
            svc.proc.wait(60)

    def test_nothing_listens_beyond_loopback_and_haproxy_is_private(self, service):
        svc, config, url = service
        port = int(url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 20
        while True:  # HAProxy restarts when the second replica joins: scan until its listener is back
            procs = svc.tree()
            listeners = _listeners(procs)
            if port in {p for _, p, _ in listeners} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert listeners, "found no listening sockets at all (the check would pass vacuously)"
        exposed = [x for x in listeners if x[0] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
        assert exposed == [], exposed
        ports = {p for _, p, _ in listeners}
        assert port in ports
        assert not ports & {8404, 9101, 8500, 9500}, "a fixed Serve/HAProxy port is in use"
        sockets = [p for p in Path(f"/tmp/mlrh-{svc.proc.pid}").rglob("admin.sock*") if p.is_socket()]
        assert sockets, "HAProxy admin socket not in the service's private directory"
        for s in sockets:
            assert s.stat().st_mode & 0o007 == 0, f"{s} is accessible to others: {oct(s.stat().st_mode)}"
        print(f"listening sockets of the service tree: {sorted(listeners)}")

    def test_reload_joins_the_recorded_cluster_or_fails_clearly(self, homes, service, tmp_path):
        svc, config, url = service
        env = dict(os.environ, RAY_AUTH_MODE="disabled", MLOPS_RAY_HOME=str(homes["a"].parent))
        env.pop("RAY_ADDRESS", None)
        nobody, _ = _config_on_free_port(homes["a"], tmp_path)  # a port no service was started for
        cmd = [sys.executable, "-m", "mlops_ray.cli", "serve", "reload", "--config"]
        r = subprocess.run([*cmd, str(nobody)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "no running service recorded" in r.stderr and "Traceback" not in r.stderr
        record = json.loads((homes["a"].parent / "run" / f"serve-{url.rsplit(':', 1)[1]}.json").read_text())
        assert record["pid"] == svc.proc.pid and record["gcs_address"].startswith("127.0.0.1:")
        r = subprocess.run([*cmd, str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200

    def test_killing_a_replica_under_load_loses_at_most_its_in_flight_requests(self, service):
        svc, _, url = service
        concurrency = 8
        rec = {"records": [{f: None for f in FEATURES}]}
        ok, failed, stop = [0], [], threading.Event()

        def load():
            with httpx.Client(timeout=30) as c:
                deadline = time.time() + 60
                while not stop.is_set() and time.time() < deadline:
                    try:
                        r = c.post(f"{url}/predict", json=rec)
                        if r.status_code == 200:
                            ok[0] += 1
                        else:
                            failed.append(r.status_code)
                    except httpx.HTTPError as err:
                        failed.append(type(err).__name__)

        try:
            replicas = [p for p in svc.tree() if "ServeReplica:mlops-ray:ModelServer" in " ".join(p.cmdline())]
            assert len(replicas) == 2, [" ".join(p.cmdline())[:80] for p in svc.tree()]
            threads = [threading.Thread(target=load) for _ in range(concurrency)]
            for t in threads:
                t.start()
            time.sleep(3)
            before = ok[0]
            replicas[0].kill()
            time.sleep(12)
            stop.set()
            for t in threads:
                t.join(60)
            after = ok[0] - before
        finally:
            stop.set()
        print(
            f"replica killed under load (c={concurrency}): {len(failed)} failed ({failed}), {after} ok after the kill"
        )
        assert after > 100, "the service did not keep serving after losing a replica"
        assert len(failed) <= concurrency, failed

    def test_sigterm_ends_the_service_with_exit_0_leaving_nothing(self, homes, service):
        """Runs last: a supervisor's SIGTERM to the foreground ``mlops-ray serve`` (not to its group) ends
        it with exit 0; the cluster, HAProxy and the service record go, and the port is free again."""
        svc, _, url = service
        assert svc.proc.poll() is None, svc.output()[-3000:]
        procs = svc.tree()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(60) == 0, svc.output()[-3000:]
        out = svc.output()
        assert f"@champion at {url}" in out and "shutting down" in out and "stopped in" in out, out[-3000:]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health", timeout=2)
        _assert_ended_cleanly(procs, homes["a"].parent, url)


def _assert_ended_cleanly(procs: list[psutil.Process], home: Path, url: str) -> None:
    """Every process of the service's tree is gone, its service record too, and its port binds again."""
    left = _gone(procs, timeout=20)
    assert left == [], [(p.pid, " ".join(p.cmdline())[:100]) for p in left]
    port = int(url.rsplit(":", 1)[1])
    assert not (home / "run" / f"serve-{port}.json").exists(), "a stopped service left its service record behind"
    with socket.socket() as s:  # as a server binds it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def _stop(svc: Service) -> None:
    if svc.proc.poll() is None:
        svc.proc.send_signal(signal.SIGTERM)
        try:
            svc.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(svc.proc.pid, signal.SIGKILL)
            svc.proc.wait(30)


class TestTwoServices:
    """Two services (one replica each: what must end is the cluster, HAProxy and the driver, not a
    second replica's start-up) started side by side on one host, then ended the three hard ways in
    turn: Ctrl-C, SIGKILL (and the same port serving again), a second signal during the shutdown."""

    @pytest.fixture(scope="class")
    def pair(self, homes, tmp_path_factory):
        tmp = tmp_path_factory.mktemp("pair")
        (ca, ua), (cb, ub) = (_config_on_free_port(homes[k], tmp, min_replicas=1, max_replicas=1) for k in "ab")
        a, b = Service(ca, homes["a"].parent), Service(cb, homes["b"].parent)
        started = [a, b]
        rec = {"records": [{f: None for f in FEATURES}]}
        seen: dict[str, set] = {"model-a": set(), "model-b": set()}
        wrong, stop = [], threading.Event()

        def poll(url, name):  # from the first moment on: never a foreign answer, 503 until ready
            with httpx.Client(timeout=10) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/predict", json=rec)
                    except httpx.HTTPError:
                        time.sleep(0.2)
                        continue
                    if r.status_code == 200:
                        got = r.json()["model"]["name"]
                        seen[name].add(got)
                        if got != name:
                            wrong.append((url, got))
                    elif r.status_code not in (404, 502, 503):
                        wrong.append((url, r.status_code, r.text[:200]))
                    time.sleep(0.05)

        threads = [
            threading.Thread(target=poll, args=(ua, "model-a")),
            threading.Thread(target=poll, args=(ub, "model-b")),
        ]
        for t in threads:
            t.start()
        try:
            try:
                a.wait_serving()
                b.wait_serving()
                time.sleep(2)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            yield {"a": (a, ca, ua), "b": (b, cb, ub), "seen": seen, "wrong": wrong, "started": started}
        finally:
            for svc in started:
                _stop(svc)

    def test_side_by_side_each_answers_only_with_its_own_model(self, pair):
        a, b = pair["a"][0], pair["b"][0]
        assert pair["wrong"] == []
        assert pair["seen"] == {"model-a": {"model-a"}, "model-b": {"model-b"}}, (
            pair["seen"],
            a.output()[-2000:],
            b.output()[-2000:],
        )

    def test_ctrl_c_is_fast_leaves_nothing_and_the_other_service_keeps_serving(self, homes, pair):
        svc, _, url = pair["a"]
        procs = svc.tree()
        assert any("raylet" in " ".join(p.cmdline()) for p in procs)
        assert any("haproxy" in " ".join(p.cmdline()) for p in procs), "no HAProxy found for the service"
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGINT)
        svc.proc.wait(30)
        took = time.monotonic() - t0
        assert took < 10, f"SIGINT shutdown took {took:.1f}s"
        assert "shutting down" in svc.output()
        _assert_ended_cleanly(procs, homes["a"].parent, url)
        r = httpx.post(f"{pair['b'][2]}/predict", json={"records": [{f: None for f in FEATURES}]}, timeout=10)
        assert r.status_code == 200 and r.json()["model"]["name"] == "model-b", r.text[:300]

    def test_sigkill_leaves_nothing_the_port_serves_again_and_a_second_signal_ends_at_once(self, homes, pair):
        svc, config, url = pair["b"]
        procs = svc.tree()
        assert any("haproxy" in " ".join(p.cmdline()) for p in procs), "no HAProxy found for the service"
        svc.proc.kill()
        svc.proc.wait(30)
        left = _gone(procs, timeout=20)
        assert left == [], [(p.pid, " ".join(p.cmdline())[:100]) for p in left]
        # after SIGKILL (the reaper cleans up at the next start): the same port serves again
        again = Service(config, homes["b"].parent)
        pair["started"].append(again)
        again.wait_serving()
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200
        procs = again.tree()
        t0 = time.monotonic()
        os.killpg(again.proc.pid, signal.SIGTERM)  # a supervisor signals the whole group ...
        time.sleep(0.5)
        os.killpg(again.proc.pid, signal.SIGTERM)  # ... and again, during the shutdown
        again.proc.wait(30)
        took = time.monotonic() - t0
        assert took < 5, f"second signal did not end the service at once ({took:.1f}s)"
        left = _gone(procs, timeout=20)
        assert left == [], [(p.pid, " ".join(p.cmdline())[:100]) for p in left]
        with socket.socket() as s:  # the port is free again, as a server binds it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", int(url.rsplit(":", 1)[1])))
