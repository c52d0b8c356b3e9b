"""The seam to Ray / MLflow internals (mlops_ray.compat), against the installed Ray and MLflow.

Every patch is applied to the real private module (imported, no cluster started) and must change
what it is for; fed a target without what it patches, it must raise PatchError naming itself.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from click.testing import CliRunner

from mlops_ray import compat, library_logs
from mlops_ray.compat import ray_2_60
from mlops_ray.errors import MlopsRayError, PatchError, UnsupportedVersionError
from mlops_ray.library_logs import LibraryLog


def _module_from_source(tmp_path, name: str, source: str):
    """A real module (with a source file, like Ray's) named ``name``."""
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ versions
def _fake_versions(monkeypatch, **versions):
    """The installed versions the seam reads (package metadata), faked per distribution."""
    real = importlib.metadata.version

    def version(dist):
        if dist in versions:
            if versions[dist] is None:
                raise importlib.metadata.PackageNotFoundError(dist)
            return versions[dist]
        return real(dist)

    monkeypatch.setattr(importlib.metadata, "version", version)


def test_the_installed_ray_and_mlflow_are_supported():
    assert compat.check_versions() == {"ray": "ray_2_60", "mlflow": "mlflow_3_17"}
    assert importlib.metadata.version("ray").startswith("2.60.")
    assert importlib.metadata.version("mlflow").startswith("3.17.")


def test_an_unknown_ray_version_is_refused_naming_installed_supported_and_override(monkeypatch):
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    _fake_versions(monkeypatch, ray="2.61.0")
    with pytest.raises(UnsupportedVersionError) as err:
        compat.check_versions()
    msg = str(err.value)
    assert "ray 2.61.0 is installed" in msg and "ray 2.60.x" in msg and "MLOPS_RAY_ALLOW_UNTESTED=1" in msg
    assert isinstance(err.value, MlopsRayError)


def test_an_unknown_or_missing_mlflow_is_refused(monkeypatch):
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    _fake_versions(monkeypatch, mlflow="4.0.1")
    with pytest.raises(UnsupportedVersionError, match=r"mlflow 4\.0\.1 is installed.*mlflow 3\.17\.x"):
        compat.check_versions()
    _fake_versions(monkeypatch, mlflow=None)
    with pytest.raises(UnsupportedVersionError, match="mlflow is not installed"):
        compat.check_versions()


def test_the_override_uses_the_newest_verified_seam(monkeypatch):
    _fake_versions(monkeypatch, ray="2.63.1")
    monkeypatch.setenv(compat.ALLOW_UNTESTED_ENV, "1")
    assert compat.select("ray") == "ray_2_60"


def test_any_cli_command_under_an_unknown_ray_fails_with_one_line_and_exit_2(monkeypatch, tmp_path):
    from mlops_ray.cli import main

    monkeypatch.setenv("MLOPS_RAY_HOME", str(tmp_path / "ws"))
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    _fake_versions(monkeypatch, ray="2.59.2")
    for args in (["data", "list"], ["--verbose", "data", "generate", "--rows", "10", "--out", str(tmp_path / "r")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ray 2.59.2 is installed"), r.stderr
        assert "Traceback" not in r.output
    assert not (tmp_path / "r").exists()  # the command did not run


def test_a_fresh_process_under_an_unknown_ray_fails_at_import_and_in_the_cli(tmp_path):
    fake = (
        "import importlib.metadata as m; real = m.version\nm.version = lambda d: '2.70.0' if d == 'ray' else real(d)\n"
    )
    env = dict(os.environ, MLOPS_RAY_HOME=str(tmp_path / "ws"))
    env.pop(compat.ALLOW_UNTESTED_ENV, None)
    code = fake + (
        "from mlops_ray.errors import UnsupportedVersionError\n"
        "try:\n    import mlops_ray.compat\nexcept UnsupportedVersionError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("refused: ray 2.70.0 is installed"), out.stderr[-2000:]
    code = fake + "import sys; from mlops_ray.cli import main; sys.argv = ['mlops-ray', 'data', 'list']; main()\n"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "ray 2.70.0" in out.stderr


# ------------------------------------------------------------------ HAProxy template
def _real_template() -> str:
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    return HAPROXY_CONFIG_TEMPLATE


def test_haproxy_template_binds_stats_and_metrics_on_loopback_and_private_socket():
    original = _real_template()
    # Ray's own template exposes both listeners on every interface and a world-writable socket
    assert re.search(r"bind \*?:\{\{ config\.stats_port \}\}", original)
    assert re.search(r"bind \*?:\{\{ config\.metrics_port \}\}", original)
    assert "mode 666 level admin" in original
    patched = compat.patch_haproxy_template(original)
    assert "bind 127.0.0.1:{{ config.stats_port }}" in patched
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in patched
    assert "mode 600 level admin" in patched and "mode 666" not in patched
    # nothing else changed
    assert len(patched.splitlines()) == len(original.splitlines())
    changed = [(a, b) for a, b in zip(original.splitlines(), patched.splitlines()) if a != b]
    assert len(changed) == 3, changed
    # the frontends keep their configured hosts
    assert "bind {{ config.frontend_host }}:{{ config.frontend_port }}" in patched
    assert compat.patch_haproxy_template(patched) == patched  # a second application changes nothing


@pytest.mark.parametrize(
    "remove, named",
    [
        (r"\n\s*bind \*?:\{\{ config\.stats_port \}\}", "stats"),
        (r"\n\s*bind \*?:\{\{ config\.metrics_port \}\}", "metrics"),
        (r"mode 666 level admin", "admin socket"),
    ],
)
def test_haproxy_template_patch_raises_when_its_line_is_gone(remove, named):
    template = re.sub(remove, "\n", _real_template())
    with pytest.raises(PatchError, match="patch 'haproxy-template'") as err:
        compat.patch_haproxy_template(template)
    assert named in str(err.value)


@pytest.fixture
def real_haproxy_module(monkeypatch):
    """Ray Serve's HAProxy manager module; its template and asyncio's spawner are restored afterwards."""
    import ray.serve._private.haproxy as haproxy

    monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", haproxy.HAPROXY_CONFIG_TEMPLATE)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", asyncio.create_subprocess_exec)
    return haproxy


def test_harden_haproxy_patches_the_template_ray_renders_and_wraps_the_spawner(real_haproxy_module):
    if getattr(asyncio.create_subprocess_exec, "_mlops_ray", False):
        pytest.skip("asyncio already wrapped in this process")
    ray_2_60.harden_haproxy(real_haproxy_module)
    assert "bind 127.0.0.1:{{ config.stats_port }}" in real_haproxy_module.HAPROXY_CONFIG_TEMPLATE
    assert "mode 600 level admin" in real_haproxy_module.HAPROXY_CONFIG_TEMPLATE
    assert asyncio.create_subprocess_exec._mlops_ray


def test_a_haproxy_started_through_the_patched_module_dies_with_its_parent(tmp_path):
    """The HAProxy manager actor starts HAProxy with asyncio; SIGKILL of the actor must end HAProxy."""
    fake_haproxy = tmp_path / "haproxy"
    fake_haproxy.symlink_to("/bin/sleep")
    code = textwrap.dedent(
        """
        import asyncio, sys
        import ray.serve._private.haproxy as haproxy
        from mlops_ray.compat import ray_2_60
        ray_2_60.harden_haproxy(haproxy)
        async def main():
            p = await asyncio.create_subprocess_exec(sys.argv[1], "60")
            print(p.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", code, str(fake_haproxy)], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(parent.stdout.readline()))
        assert child.is_running()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.time() + 10
        while time.time() < deadline and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    finally:
        parent.kill()
        parent.wait(5)


def test_harden_haproxy_raises_without_a_template_or_an_asyncio_spawner(tmp_path):
    with pytest.raises(PatchError, match="patch 'haproxy-template'.*HAPROXY_CONFIG_TEMPLATE"):
        ray_2_60.harden_haproxy(types.ModuleType("ray_serve_haproxy_without_template"))
    module = _module_from_source(
        tmp_path,
        "haproxy_spawning_otherwise",
        f"""
        import subprocess
        HAPROXY_CONFIG_TEMPLATE = {_real_template()!r}
        def start(cmd):
            return subprocess.Popen(cmd)
        """,
    )
    with pytest.raises(PatchError, match="patch 'haproxy-die-with-parent'"):
        ray_2_60.harden_haproxy(module)
    assert "mode 666 level admin" in module.HAPROXY_CONFIG_TEMPLATE  # nothing half-applied


# ------------------------------------------------------------------ replica gRPC
def test_replica_grpc_server_binds_loopback_after_the_patch(monkeypatch):
    import grpc
    import ray.serve._private.replica as replica

    monkeypatch.setattr(replica, "add_port_to_grpc_server", replica.add_port_to_grpc_server)
    ray_2_60.loopback_replica_grpc(replica)
    assert replica.add_port_to_grpc_server._mlops_ray
    server = grpc.server(ThreadPoolExecutor(1))
    try:
        port = replica.add_port_to_grpc_server(server, "[::]:0")  # what Replica passes (replica.py)
        server.start()
        listening = [
            c.laddr
            for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        # gRPC binds a dual-stack socket: loopback shows as its IPv4-mapped form (unpatched: "::")
        assert listening and {a.ip for a in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    finally:
        server.stop(0)


def test_replica_grpc_patch_raises_without_the_function_or_its_all_interfaces_call(tmp_path):
    with pytest.raises(PatchError, match="patch 'replica-grpc-loopback'.*add_port_to_grpc_server"):
        ray_2_60.loopback_replica_grpc(types.ModuleType("replica_without_grpc"))
    module = _module_from_source(
        tmp_path,
        "replica_binding_elsewhere",
        """
        def add_port_to_grpc_server(server, address):
            return server.add_insecure_port(address)
        def start(server):
            return add_port_to_grpc_server(server, "10.0.0.1:0")
        """,
    )
    with pytest.raises(PatchError, match="no longer calls add_port_to_grpc_server"):
        ray_2_60.loopback_replica_grpc(module)


# ------------------------------------------------------------------ loopback node
def test_keep_node_on_loopback_makes_ray_resolve_the_node_to_127_0_0_1(monkeypatch):
    from ray._private import ray_constants, services

    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", ray_constants.ENABLE_RAY_CLUSTER)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    compat.keep_node_on_loopback()
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and compat.loopback_node_requested()
    assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert services.get_node_ip_address() == "127.0.0.1"


def test_keep_node_on_loopback_raises_when_rays_switch_is_gone(monkeypatch):
    from ray._private import ray_constants

    monkeypatch.delattr(ray_constants, "ENABLE_RAY_CLUSTER")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with pytest.raises(PatchError, match="patch 'loopback-node'"):
        compat.keep_node_on_loopback()


# ------------------------------------------------------------------ driver output
@pytest.fixture
def log(tmp_path):
    lg = library_logs.activate(LibraryLog(tmp_path / "logs", "test"))
    yield lg
    library_logs.deactivate()
    lg.close()


def test_worker_output_routes_through_rays_real_printer(log, monkeypatch, capsys):
    """Against the installed Ray (imported, not started): the printer Ray's log and error threads call."""
    from ray._private import worker

    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # undone after the test
    original = worker.print_to_stdstream
    library_logs.before_ray_init()
    assert worker.print_to_stdstream is not original
    assert worker.print_to_stdstream._mlops_ray_original is original
    worker.print_to_stdstream({"pid": "raylet", "is_err": False, "lines": ["killed by ray.kill"]}, ignore_prefix=False)
    assert capsys.readouterr() == ("", "") and "(raylet) [stdout] killed by ray.kill" in log.path.read_text()


def test_route_driver_output_raises_when_rays_printer_is_gone(monkeypatch):
    from ray._private import worker

    monkeypatch.delattr(worker, "print_to_stdstream")
    with pytest.raises(PatchError, match="patch 'driver-output'"):
        compat.route_driver_output(lambda data: None)


# ------------------------------------------------------------------ worker hook
def test_worker_setup_patches_serve_modules_only_when_a_worker_imports_them():
    """The hook costs nothing in workers that never load Ray Serve; where they load, they are hardened."""
    code = textwrap.dedent(
        """
        import sys, asyncio
        from mlops_ray.ray_runtime import worker_setup
        worker_setup()
        assert 'ray.serve._private.haproxy' not in sys.modules
        import ray.serve._private.haproxy as h
        assert 'bind 127.0.0.1:{{ config.stats_port }}' in h.HAPROXY_CONFIG_TEMPLATE
        assert asyncio.create_subprocess_exec._mlops_ray
        import ray.serve._private.replica as r
        assert r.add_port_to_grpc_server._mlops_ray
        print('ok')
        """
    )
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_a_patch_that_does_not_fit_fails_the_import_in_the_worker_every_time(tmp_path, monkeypatch):
    """In a worker, the actor whose module cannot be hardened fails to start with the patch's error."""
    (tmp_path / "replica_like_module.py").write_text("def something_else():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = compat._PatchOnImport({"replica_like_module": ray_2_60.loopback_replica_grpc})
    monkeypatch.setattr(sys, "meta_path", [hook, *sys.meta_path])
    for _ in range(2):  # not left half-imported: a retry (a restarted actor) fails the same way
        with pytest.raises(PatchError, match="patch 'replica-grpc-loopback'"):
            importlib.import_module("replica_like_module")
        assert "replica_like_module" not in sys.modules


def test_a_module_to_patch_that_this_ray_lacks_is_an_error():
    ray_2_60.check_patch_targets(ray_2_60.worker_patches(loopback_node=True))  # the real ones exist
    with pytest.raises(PatchError, match="ray.serve._private.no_such_module"):
        ray_2_60.check_patch_targets(["ray.serve._private.no_such_module"])


def test_the_driver_applies_every_worker_patch_before_ray_starts(monkeypatch):
    import ray.serve._private.haproxy as haproxy
    import ray.serve._private.replica as replica

    monkeypatch.setattr(haproxy, "HAPROXY_CONFIG_TEMPLATE", haproxy.HAPROXY_CONFIG_TEMPLATE)
    monkeypatch.setattr(replica, "add_port_to_grpc_server", replica.add_port_to_grpc_server)
    monkeypatch.setattr(asyncio, "create_subprocess_exec", asyncio.create_subprocess_exec)
    compat.apply_worker_patches(loopback_node=True)
    assert "bind 127.0.0.1:{{ config.metrics_port }}" in haproxy.HAPROXY_CONFIG_TEMPLATE
    assert replica.add_port_to_grpc_server._mlops_ray


# ------------------------------------------------------------------ MLflow fluent URIs
def test_fluent_uris_read_and_restore_exactly_what_was_set(monkeypatch, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path}/a.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    assert compat.fluent_uris() == (uri, uri)
    compat.set_fluent_uris(None, None)
    assert compat.fluent_uris() == (None, None)
    assert "MLFLOW_TRACKING_URI" not in os.environ  # MLflow's default resolution is back


def test_fluent_uris_raise_when_mlflow_moved_them():
    from mlflow.tracking._tracking_service import utils as tracking_utils

    # not monkeypatch: the autouse MLflow fixture needs the attribute back before monkeypatch's undo
    saved = tracking_utils.__dict__.pop("_tracking_uri")
    try:
        with pytest.raises(PatchError, match="patch 'mlflow-uris'.*_tracking_uri"):
            compat.fluent_uris()
    finally:
        tracking_utils.__dict__["_tracking_uri"] = saved


def test_tracking_scope_keeps_a_thread_on_its_store_while_another_waits(tmp_path):
    """Two threads, two stores: the second waits for the first to leave; every read sees its own URI."""
    import mlflow

    from mlops_ray.registry import tracking

    uris = [f"sqlite:///{tmp_path}/{n}.db" for n in ("a", "b")]
    before = compat.fluent_uris()
    seen: dict[str, list[str]] = {u: [] for u in uris}
    a_inside, b_tried = threading.Event(), threading.Event()

    def worker(uri, first):
        if not first:
            a_inside.wait(5)
            b_tried.set()
        with tracking.scope(uri):
            if first:
                a_inside.set()
                b_tried.wait(5)
            for _ in range(20):
                seen[uri].append(mlflow.get_tracking_uri())
                time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(u, i == 0)) for i, u in enumerate(uris)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(seen[u] == [u] * 20 for u in uris), seen
    assert compat.fluent_uris() == before


def test_tracking_scope_nests_in_one_thread_and_restores_the_outer_store(tmp_path):
    import mlflow

    from mlops_ray.registry import tracking

    outer, inner = f"sqlite:///{tmp_path}/o.db", f"sqlite:///{tmp_path}/i.db"
    with tracking.scope(outer):
        with tracking.scope(inner):
            assert mlflow.get_tracking_uri() == inner and mlflow.get_registry_uri() == inner
        assert mlflow.get_tracking_uri() == outer and os.environ["MLFLOW_TRACKING_URI"] == outer


def test_free_port_helper_still_binds_loopback():
    # ray_runtime's own helpers are unchanged by the seam; a smoke check that it imports through compat
    from mlops_ray.ray_runtime import free_ports

    (port,) = free_ports(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
