"""What ``GET /health`` answers, and the registry watch behind it (pure; no Ray, no MLflow).

A replica keeps serving the model it has when the registry becomes unreachable (the poller
keeps trying); ``/health`` says so instead of staying "ok":

* no model loaded: 503 (not ready; load balancers and ``wait_healthy`` keep waiting);
* a model loaded, last registry check succeeded: 200 ``{"status": "ok", "registry": "ok"}``;
* a model loaded, last registry check failed: 200 ``{"status": "degraded",
  "registry": "unreachable: <error>"}`` (or ``"alias not found: ..."`` / ``"load failed: ..."``
  when the registry answered but the alias is gone or the new version would not load), with the
  age of the last good check.

Still 200 when degraded: the replica answers correctly with the version it names, so taking it
out of rotation would turn a registry outage into a service outage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What a failed check was (the prefix of "registry" in a degraded answer).
UNREACHABLE = "unreachable"  # the registry could not be read
NOT_FOUND = "alias not found"  # it answered, but the alias (or version) is gone
LOAD_FAILED = "load failed"  # it answered, but the new version would not load


@dataclass
class RegistryWatch:
    """The outcome of a replica's latest registry check (poller, ``/reload``, reconfigure)."""

    last_ok_at: float | None = None
    error: str | None = None  # the latest check's failure, "<kind>: <message>"; None once one succeeds
    failed_at: float | None = None

    def ok(self, now: float) -> None:
        self.last_ok_at, self.error, self.failed_at = now, None, None

    def failed(self, kind: str, error: str, now: float) -> None:
        self.error, self.failed_at = f"{kind}: {error}", now


def health(
    model_version: str | None, load_error: str | None, watch: RegistryWatch, now: float
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``GET /health``."""
    if model_version is None:
        return 503, {"status": "unavailable", "detail": f"no model loaded: {load_error}"}
    if watch.error is None:
        return 200, {"status": "ok", "model_version": model_version, "registry": "ok"}
    age = None if watch.last_ok_at is None else round(now - watch.last_ok_at, 1)
    return 200, {
        "status": "degraded",
        "model_version": model_version,
        "registry": watch.error,
        "registry_last_ok_age_s": age,
    }
