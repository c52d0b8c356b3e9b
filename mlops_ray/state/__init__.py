"""The state-store seam: shared state (locks, caches, histories, checkpoints, records) behind one interface.

:func:`store_for` picks the implementation from a URI's scheme, in the style of MLflow's
``ArtifactRepositoryRegistry``: ``/abs/dir``, ``relative/dir`` or ``file:///abs/dir`` give a
:class:`LocalStateStore`, ``s3://bucket/prefix`` an :class:`S3StateStore` whose endpoint comes from
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL`` or ``MLFLOW_S3_ENDPOINT_URL`` (the first one set; none:
AWS). :func:`register_scheme` adds a backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlops_ray.state.s3 import DEFAULT_LEASE_S, S3StateStore
from mlops_ray.state.store import LocalStateStore, StateStore, check_key

S3_ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")

StoreFactory = Callable[[str], StateStore]


def _local_store(uri: str) -> StateStore:
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"a file: state URI names no host (file:///abs/path), got {uri!r}")
        return LocalStateStore(Path(unquote(parsed.path)))
    return LocalStateStore(Path(uri))


def s3_endpoint_from_env() -> str | None:
    """The S3 endpoint set in the environment (see ``S3_ENDPOINT_ENV``, first one set wins); None: AWS."""
    return next((os.environ[name] for name in S3_ENDPOINT_ENV if os.environ.get(name)), None)


def _s3_store(uri: str) -> StateStore:
    parsed = urlparse(uri)
    if not parsed.netloc:
        raise ValueError(f"an s3 state URI names a bucket: s3://bucket/prefix, got {uri!r}")
    return S3StateStore(parsed.netloc, parsed.path.strip("/"), endpoint_url=s3_endpoint_from_env())


class StateStoreRegistry:
    """URI scheme -> factory of a :class:`StateStore` (like MLflow's ``ArtifactRepositoryRegistry``)."""

    def __init__(self) -> None:
        self._factories: dict[str, StoreFactory] = {}

    def register(self, scheme: str, factory: StoreFactory) -> None:
        """Make ``store_for('<scheme>://...')`` call ``factory(uri)``; a scheme registered again is replaced."""
        if not callable(factory):
            raise TypeError(f"factory for scheme {scheme!r} must be callable, got {factory!r}")
        self._factories[scheme.lower()] = factory

    def schemes(self) -> list[str]:
        return sorted(self._factories)

    def store_for(self, uri: str) -> StateStore:
        scheme = urlparse(uri).scheme.lower()
        factory = self._factories.get(scheme)
        if factory is None:
            known = ", ".join(repr(s) if s else "'' (a path)" for s in self.schemes())
            raise ValueError(f"no state store for scheme {scheme!r} in {uri!r}; registered schemes: {known}")
        return factory(uri)


_registry = StateStoreRegistry()
_registry.register("", _local_store)
_registry.register("file", _local_store)
_registry.register("s3", _s3_store)


def register_scheme(scheme: str, factory: StoreFactory) -> None:
    """Register ``factory(uri) -> StateStore`` for URIs of ``scheme`` (see :class:`StateStoreRegistry`)."""
    _registry.register(scheme, factory)


def store_for(uri: str) -> StateStore:
    """The state store a URI names: a path or ``file://`` (local), ``s3://bucket/prefix``, or a registered scheme."""
    return _registry.store_for(uri)


__all__ = [
    "DEFAULT_LEASE_S",
    "LocalStateStore",
    "S3StateStore",
    "S3_ENDPOINT_ENV",
    "StateStore",
    "StateStoreRegistry",
    "check_key",
    "register_scheme",
    "s3_endpoint_from_env",
    "store_for",
]
