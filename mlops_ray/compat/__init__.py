"""The one seam between mlops-ray and Ray / Ray Serve / MLflow internals.

Every private API the project uses (private modules, attributes, templates and the names of
private environment variables) lives in one module per verified library version:
:mod:`~mlops_ray.compat.ray_2_60` (ray 2.60.x) and :mod:`~mlops_ray.compat.mlflow_3_17`
(mlflow 3.17.x). This package picks them for the installed versions when it is imported, and the
rest of the code calls only the names below.

Failing loudly:

* an installed Ray or MLflow without a module here raises :class:`UnsupportedVersionError` at import
  (and the CLI says so in one line, exit code 2, before any command runs); set
  ``MLOPS_RAY_ALLOW_UNTESTED=1`` to use the newest module here anyway, at your own risk;
* a patch that finds nothing to patch raises :class:`PatchError` naming the patch, never a warning.
  Worker patches are applied in the driver first (:func:`apply_worker_patches`, before ``ray.init``),
  so a mismatch stops ``mlops-ray serve`` before a cluster starts; in a worker the same error makes
  the import of the patched module fail, so the actor that needs it (Serve's controller, a replica)
  fails to start with that message instead of running unhardened.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.metadata
import logging
import os
import re
import sys
from typing import Callable

from mlops_ray.errors import PatchError, UnsupportedVersionError

__all__ = ["PatchError", "UnsupportedVersionError"]

ALLOW_UNTESTED_ENV = "MLOPS_RAY_ALLOW_UNTESTED"
# distribution -> {(major, minor): module verified against that release series}
IMPLEMENTATIONS: dict[str, dict[tuple[int, int], str]] = {
    "ray": {(2, 60): "ray_2_60"},
    "mlflow": {(3, 17): "mlflow_3_17"},
}
log = logging.getLogger(__name__)


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (from its metadata: nothing is imported), or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _series(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def select(dist: str) -> str:
    """The compat module for the installed ``dist``.

    Raises:
        UnsupportedVersionError: no module was verified against the installed version (names it,
            the supported ones and the override).
    """
    table = IMPLEMENTATIONS[dist]
    version = installed_version(dist)
    series = _series(version) if version else None
    if series in table:
        return table[series]
    supported = ", ".join(f"{a}.{b}.x" for a, b in sorted(table))
    if version is not None and os.environ.get(ALLOW_UNTESTED_ENV) == "1":
        newest = table[max(table)]
        log.warning("%s %s is untested; using the %s seam (%s=1)", dist, version, newest, ALLOW_UNTESTED_ENV)
        return newest
    installed = f"{dist} {version} is installed" if version else f"{dist} is not installed"
    raise UnsupportedVersionError(
        f"{installed}, but mlops-ray supports only {dist} {supported} (it depends on {dist} internals "
        f"checked for those versions): install a supported {dist}, or set {ALLOW_UNTESTED_ENV}=1 to try "
        f"this one at your own risk"
    )


def check_versions() -> dict[str, str]:
    """``{distribution: compat module}`` for the installed Ray and MLflow, re-read now (the CLI calls
    this before any command). Raises :class:`UnsupportedVersionError`."""
    return {dist: select(dist) for dist in IMPLEMENTATIONS}


_SELECTED = check_versions()
_ray = importlib.import_module(f"{__name__}.{_SELECTED['ray']}")
_mlflow = importlib.import_module(f"{__name__}.{_SELECTED['mlflow']}")

SUPPORTED = {"ray": _ray.SUPPORTED, "mlflow": _mlflow.SUPPORTED}

# ------------------------------------------------------------------ Ray: environment of local clusters
SERVE_AUTOSCALING_METRIC_ENV: tuple[str, ...] = _ray.SERVE_AUTOSCALING_METRIC_ENV
SERVE_ENABLE_HAPROXY_ENV: str = _ray.SERVE_ENABLE_HAPROXY_ENV
SERVE_PORT_ENV: tuple[str, ...] = _ray.SERVE_PORT_ENV
SERVE_HAPROXY_PATH_ENV: tuple[str, ...] = _ray.SERVE_HAPROXY_PATH_ENV  # config, socket, state dir, state file
SERVE_DRAINING_ENV: tuple[str, ...] = _ray.SERVE_DRAINING_ENV
TUNE_NEW_OUTPUT_ENV: str = _ray.TUNE_NEW_OUTPUT_ENV
TRAIN_HEALTH_CHECK_INTERVAL_ENV: str = _ray.TRAIN_HEALTH_CHECK_INTERVAL_ENV

keep_node_on_loopback: Callable[[], None] = _ray.keep_node_on_loopback
loopback_node_requested: Callable[[], bool] = _ray.loopback_node_requested
patch_haproxy_template: Callable[[str], str] = _ray.patch_haproxy_template
route_driver_output: Callable[[Callable[[dict], None]], None] = _ray.route_driver_output
validate_cluster_config: Callable[[dict], dict] = _ray.validate_cluster_config  # `ray up`'s checks, offline

# ------------------------------------------------------------------ MLflow: the fluent API's URIs
fluent_uris: Callable[[], tuple[str | None, str | None]] = _mlflow.fluent_uris
set_fluent_uris: Callable[[str | None, str | None], None] = _mlflow.set_fluent_uris


# ------------------------------------------------------------------ worker patches
def apply_worker_patches(loopback_node: bool) -> None:
    """Import the modules every serving worker patches and patch them now, in this process.

    The driver calls it before ``ray.init``: the workers run the same Ray, so a patch that would
    fail there fails here first, as one clear :class:`PatchError`.
    """
    for name, patch in _ray.worker_patches(loopback_node).items():
        patch(importlib.import_module(name))


def install_worker_patches(loopback_node: bool) -> None:
    """Patch Serve's modules in this worker when they are imported (at once if they already are), so
    that workers which never load Ray Serve never pay for importing it (0.85 s per worker).

    Raises:
        PatchError: a module to patch does not exist in this Ray. A patch that fails later makes
            the import of its module raise it (see :class:`_PatchingLoader`).
    """
    patches = _ray.worker_patches(loopback_node)
    _ray.check_patch_targets(patches)
    for name, patch in list(patches.items()):
        if name in sys.modules:  # already imported in this worker: patch now
            patch(sys.modules[name])
            del patches[name]
    hook = next((f for f in sys.meta_path if isinstance(f, _PatchOnImport)), None)
    if hook is not None:
        hook.patches.update(patches)
    elif patches:
        sys.meta_path.insert(0, _PatchOnImport(patches))


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies a patch to a module right after it is first imported."""

    def __init__(self, patches: dict):
        self.patches = patches

    def find_spec(self, name, path, target=None):
        patch = self.patches.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, patch)
                return spec
        return None


class _PatchingLoader(importlib.abc.Loader):
    """Runs the module, then its patch. A patch error propagates: the import fails (and Python drops
    the half-initialised module, so every later import fails the same way) rather than leaving the
    module unpatched."""

    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        self.patch(module)
