"""Ray 2.60.x internals mlops-ray depends on (verified against ray 2.60.0).

Every private Ray / Ray Serve name the project uses is here: environment variables read by
``ray/serve/_private/constants.py`` and ``ray/_private/ray_constants.py``, and the patches applied
to Ray Serve's HAProxy manager, its replicas and Ray's driver-side printer. Each patch checks that
what it patches is there and changed; otherwise it raises :class:`~mlops_ray.errors.PatchError`
naming itself (never a warning): a Ray whose internals moved must fail loudly, not run unhardened.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import os
import re
from pathlib import Path
from typing import Callable

from mlops_ray.errors import PatchError

SUPPORTED = "2.60.x"

# --------------------------------------------------------------------------- environment
# Named by Serve's public AutoscalingConfig deprecation of `metrics_interval_s` (ray/serve/config.py).
SERVE_AUTOSCALING_METRIC_ENV = (
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S",
)
# Documented (KubeRay "Enable High Throughput on Ray Serve" guide, Ray >= 2.55).
SERVE_ENABLE_HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"
# Ports Serve binds at fixed numbers (8404, 9101, 8500, 9500); only ray/serve/_private/constants.py names them.
SERVE_PORT_ENV = (
    "RAY_SERVE_HAPROXY_STATS_PORT",
    "RAY_SERVE_HAPROXY_METRICS_PORT",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT",
)
# HAProxy's config file, admin socket, server-state directory and file (shared /tmp/haproxy-serve by default).
SERVE_HAPROXY_PATH_ENV = (
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC",
    "RAY_SERVE_HAPROXY_SOCKET_PATH",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE",
)
# Proxy draining is documented (Serve production config); direct-ingress draining only in constants.py.
SERVE_DRAINING_ENV = (
    "RAY_SERVE_PROXY_MIN_DRAINING_PERIOD_S",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
)
# Ray's single-machine switch (default off on macOS/Windows): the node address becomes 127.0.0.1.
LOOPBACK_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# "0": Tune's legacy console reporter, silent at verbose=0 (ray/tune/experimental/output.py).
TUNE_NEW_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
# Train v2's controller/worker poll interval (ray/train/v2/_internal/constants.py; default 2 s per report).
TRAIN_HEALTH_CHECK_INTERVAL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"

LOOPBACK = "127.0.0.1"


def loopback_node_requested() -> bool:
    """True when the environment asks Ray to keep the node on loopback (workers inherit it)."""
    return os.environ.get(LOOPBACK_NODE_ENV, "").lower() in ("0", "false")


def keep_node_on_loopback() -> None:
    """Make a new local node's address 127.0.0.1, so Ray binds GCS, raylet, object manager, workers
    and agents to loopback.

    ``ray.init(_node_ip_address="127.0.0.1")`` is resolved back to the machine's external address
    (``services.resolve_ip_for_localhost``); ``services.get_node_ip_address`` returns loopback only
    while ``ray_constants.ENABLE_RAY_CLUSTER`` is false. Child processes read the variable; this
    process's already-imported constant is set to match.
    """
    os.environ.setdefault(LOOPBACK_NODE_ENV, "0")
    if not loopback_node_requested():
        return
    from ray._private import ray_constants

    # the switch must still exist, and still be read from that variable (its constant names it)
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER") or LOOPBACK_NODE_ENV not in vars(ray_constants).values():
        raise PatchError(
            "patch 'loopback-node': ray._private.ray_constants has no ENABLE_RAY_CLUSTER read from "
            f"{LOOPBACK_NODE_ENV}; this Ray cannot be kept on loopback this way"
        )
    ray_constants.ENABLE_RAY_CLUSTER = False


# --------------------------------------------------------------------------- HAProxy
_HAPROXY_MODULE = "ray.serve._private.haproxy"
_REPLICA_MODULE = "ray.serve._private.replica"
_LISTENER_BIND = re.compile(r"(\n\s*bind )\*?:(\{\{ config\.(stats|metrics)_port \}\})")
_SOCKET_MODE = ("mode 666 level admin", "mode 600 level admin")


def patch_haproxy_template(template: str) -> str:
    """Ray's HAProxy config with its stats/metrics listeners on loopback and an admin socket only
    its owner can use (Ray binds both listeners to every interface and makes the socket mode 666).

    Raises:
        PatchError: a rewrite matched nothing (Ray changed the template); an already patched
            template is returned unchanged.
    """
    found = {m.group(3) for m in _LISTENER_BIND.finditer(template)}
    for listener in ("stats", "metrics"):
        if listener not in found and f"bind {LOOPBACK}:{{{{ config.{listener}_port }}}}" not in template:
            raise PatchError(
                f"patch 'haproxy-template': no 'bind *:{{{{ config.{listener}_port }}}}' line in Ray Serve's "
                f"HAPROXY_CONFIG_TEMPLATE; its {listener} listener cannot be moved to {LOOPBACK}"
            )
    out = _LISTENER_BIND.sub(rf"\g<1>{LOOPBACK}:\2", template)
    old, new = _SOCKET_MODE
    if old not in out and new not in out:
        raise PatchError(
            f"patch 'haproxy-template': no '{old}' stats socket in Ray Serve's HAPROXY_CONFIG_TEMPLATE; "
            "its admin socket cannot be made private"
        )
    return out.replace(old, new)


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _source(module) -> str:
    try:
        return inspect.getsource(module)
    except (OSError, TypeError):
        return ""


def harden_haproxy(module) -> None:
    """Patch ``ray.serve._private.haproxy``: the template (:func:`patch_haproxy_template`), and a
    HAProxy started by it dies with the actor that started it (``prctl(PR_SET_PDEATHSIG)``).

    Raises:
        PatchError: no ``HAPROXY_CONFIG_TEMPLATE``, or the module no longer starts HAProxy through
            ``asyncio.create_subprocess_exec``.
    """
    if not isinstance(getattr(module, "HAPROXY_CONFIG_TEMPLATE", None), str):
        raise PatchError(f"patch 'haproxy-template': {module.__name__} has no HAPROXY_CONFIG_TEMPLATE string")
    src = _source(module)
    if "asyncio.create_subprocess_exec(" not in src:
        raise PatchError(
            f"patch 'haproxy-die-with-parent': {module.__name__} does not start HAProxy through "
            "asyncio.create_subprocess_exec; HAProxy would outlive its actor"
        )
    module.HAPROXY_CONFIG_TEMPLATE = patch_haproxy_template(module.HAPROXY_CONFIG_TEMPLATE)
    if getattr(asyncio.create_subprocess_exec, "_mlops_ray", False):
        return
    original = asyncio.create_subprocess_exec

    async def create_subprocess_exec(program, *args, **kwargs):
        if "haproxy" in os.path.basename(str(program)) and "preexec_fn" not in kwargs:
            kwargs["preexec_fn"] = _die_with_parent  # HAProxy must not outlive its manager actor
        return await original(program, *args, **kwargs)

    create_subprocess_exec._mlops_ray = True
    asyncio.create_subprocess_exec = create_subprocess_exec


_ALL_INTERFACES = ("[::]:0", "0.0.0.0:0")
_GRPC_CALL = re.compile(r"add_port_to_grpc_server\([^)]*[\"'](\[::\]|0\.0\.0\.0):0[\"']")


def loopback_replica_grpc(module) -> None:
    """Patch ``ray.serve._private.replica``: its inter-deployment gRPC server, started on ``[::]:0``
    (all interfaces), binds ``127.0.0.1:0`` instead.

    Raises:
        PatchError: no ``add_port_to_grpc_server``, or the module no longer calls it with an
            all-interfaces address (the wrapper would change nothing).
    """
    original = getattr(module, "add_port_to_grpc_server", None)
    if not callable(original):
        raise PatchError(f"patch 'replica-grpc-loopback': {module.__name__} has no add_port_to_grpc_server")
    if getattr(original, "_mlops_ray", False):
        return
    if not _GRPC_CALL.search(_source(module)):
        raise PatchError(
            f"patch 'replica-grpc-loopback': {module.__name__} no longer calls add_port_to_grpc_server with "
            f"{' or '.join(_ALL_INTERFACES)}; the replica's gRPC address cannot be moved to loopback"
        )

    def add_port_to_grpc_server(server, address: str):
        if address in _ALL_INTERFACES:
            address = f"{LOOPBACK}:0"
        return original(server, address)

    add_port_to_grpc_server._mlops_ray = True
    module.add_port_to_grpc_server = add_port_to_grpc_server


def worker_patches(loopback_node: bool) -> dict[str, Callable]:
    """``{module name: patch}`` to apply in every worker of a local serving cluster."""
    patches: dict[str, Callable] = {_HAPROXY_MODULE: harden_haproxy}
    if loopback_node:
        patches[_REPLICA_MODULE] = loopback_replica_grpc
    return patches


def check_patch_targets(names) -> None:
    """Raise :class:`PatchError` for a module to patch that this Ray does not ship (checked by file,
    so that nothing is imported: a worker that never loads Ray Serve never pays for it)."""
    spec = importlib.util.find_spec("ray")
    root = Path(spec.origin).parent if spec is not None and spec.origin else None
    for name in names:
        rel = Path(*name.split(".")[1:])
        if root is None or not ((root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()):
            raise PatchError(f"patch of {name}: this Ray has no module {name}; nothing to harden there")


# --------------------------------------------------------------------------- driver output
def route_driver_output(write: Callable[[dict], None]) -> None:
    """Send what Ray prints in the driver for its workers and raylet (``ray._private.worker.print_to_stdstream``:
    dicts with ``pid``, ``lines``, ``is_err``, ``actor_name``/``task_name``) to ``write`` instead of the console.

    Raises:
        PatchError: Ray's driver has no ``print_to_stdstream`` to replace.
    """
    from ray._private import worker

    current = getattr(worker, "print_to_stdstream", None)
    if not callable(current):
        raise PatchError("patch 'driver-output': ray._private.worker has no print_to_stdstream")
    original = getattr(current, "_mlops_ray_original", current)

    def print_to_stdstream(data, ignore_prefix: bool = False):
        write(data)

    print_to_stdstream._mlops_ray_original = original
    worker.print_to_stdstream = print_to_stdstream


# --------------------------------------------------------------------------- cluster launcher
def validate_cluster_config(config: dict) -> dict:
    """``config`` (a parsed cluster-launcher YAML) as ``ray up`` would use it, checked by Ray itself.

    Fills in the defaults of its provider (``ray.autoscaler._private.util.prepare_config``: the
    provider's ``defaults.yaml``, setup commands merged into the head/worker lists, ``max_workers``
    per node type), then validates the result against ``ray/autoscaler/ray-schema.json`` and Ray's
    own rules (``validate_config``). Contacts no cloud. Returns the filled-in config.

    Raises:
        jsonschema.ValidationError: a key or value the schema rejects.
        ValueError: Ray's rules (e.g. the head node type is not a node type; more min workers than max_workers).
    """
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared
