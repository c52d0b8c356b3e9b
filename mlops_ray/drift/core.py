"""What the drift monitor knows and answers, without Ray (pure): windows per model version, the
closed-window verdicts, the ``GET /drift`` report and the checkpoint.

:class:`MonitorCore` wraps a :class:`~mlops_ray.drift.windows.WindowStore` with what the actor
adds around it: at most :data:`MAX_VERSIONS` versions at once (the oldest registered is dropped),
push and sampled-out row counters, alert start/end transitions, and whether the state changed
since the last checkpoint. Times are passed in (``now``, seconds since the epoch), so tests step it
with a fake clock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlops_ray.config import DriftConfig
from mlops_ray.drift.psi import ALERT
from mlops_ray.drift.reference import limits_of
from mlops_ray.drift.render import json_safe
from mlops_ray.drift.windows import WindowStore

log = logging.getLogger("mlops_ray.drift")

MAX_VERSIONS = 5  # versions monitored at once (the oldest is dropped)


class MonitorCore:
    """The monitor's state for one model: windows, counters and the report built from them."""

    def __init__(self, model_name: str, cfg: DriftConfig, *, checkpoint: dict | None = None, now: float = 0.0):
        """``checkpoint``: a :meth:`to_checkpoint` dict to restore (an unreadable one starts empty)."""
        self.model_name = model_name
        self.cfg = cfg
        self.started_at = now
        self.windows = self._restore(checkpoint)
        self.restored = bool(self.windows.versions)
        self.pushes = 0
        self.sampled_out: dict[str, int] = {}  # rows replicas did not count (drift.sample_rows_per_s)
        self.dirty = False  # changed since the last checkpoint
        self._last_status: dict[str, str] = {}

    def _params(self) -> dict[str, Any]:
        return {
            "window_rows": self.cfg.window_rows,
            "window_s": self.cfg.window_s,
            "keep_windows": self.cfg.keep_windows,
            "limits": limits_of(self.cfg),
        }

    def _restore(self, checkpoint: dict | None) -> WindowStore:
        if checkpoint is not None:
            try:
                return WindowStore.from_dict(checkpoint, **self._params())
            except Exception as err:  # a corrupt checkpoint must not keep the monitor down
                log.warning("drift checkpoint of %s unusable (%s); starting empty", self.model_name, err)
        return WindowStore(self.model_name, **self._params())

    # ---------------------------------------------------------------- updates
    def register(self, version: str, reference_stats: dict, now: float) -> bool:
        """Start monitoring ``version`` (idempotent); True if it is new (the caller checkpoints then:
        a restarted monitor must know every version it was told of)."""
        new = self.windows.register(str(version), reference_stats, now)
        if new:
            versions = self.windows.versions
            while len(versions) > MAX_VERSIONS:
                del versions[min(versions, key=lambda v: versions[v].registered_at)]
            self.dirty = True
        return new

    def push(self, version: str, counts: dict, rows: int, now: float, skipped: int = 0) -> list[dict[str, Any]]:
        """Merge one replica's push; returns the evaluations of the windows it closed."""
        self.pushes += 1
        version = str(version)
        if skipped:
            self.sampled_out[version] = self.sampled_out.get(version, 0) + int(skipped)
        if not rows:
            return []
        closed = self._closed(self.windows.add(version, counts, int(rows), now))
        self.dirty = True
        return closed

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Close the windows older than ``window_s``; returns their evaluations."""
        return self._closed(self.windows.tick(now))

    def _closed(self, evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for ev in evaluations:
            self.dirty = True
            v, status = ev["model_version"], ev["status"]
            previous = self._last_status.get(v)
            self._last_status[v] = status
            if status == ALERT and previous != ALERT:  # log changes, not every window of a drift
                names = [f["feature"] for f in ev["features"] if f["status"] == ALERT]
                log.warning("drift alert on %s v%s: %s", self.model_name, v, ", ".join(names))
            elif previous == ALERT and status != ALERT:
                log.warning("drift alert on %s v%s ended (window status %s)", self.model_name, v, status)
        return evaluations

    # ---------------------------------------------------------------- reading
    def versions(self, version: str | None = None) -> list[str]:
        """The monitored versions a report covers: all of them, or ``version`` if it is monitored."""
        if version is None:
            return list(self.windows.versions)
        return [str(version)] if str(version) in self.windows.versions else []

    def report(
        self, version: str | None = None, *, monitor: Mapping[str, Any], feedback: Mapping[str, dict]
    ) -> dict[str, Any]:
        """What ``GET /drift`` returns: every monitored version's window in progress and closed windows
        (or only ``version``'s), JSON-safe. ``monitor``: the actor's ``checkpoint`` and ``metrics``
        locations; ``feedback``: the feedback summary per version."""
        out = {
            "model": self.model_name,
            "monitor": {
                "started_at": self.started_at,
                "restored_from_checkpoint": self.restored,
                "pushes": self.pushes,
                "dropped_rows": self.windows.dropped_rows,
                "checkpoint": monitor.get("checkpoint"),
                "metrics": monitor.get("metrics"),
            },
            "settings": {
                **limits_of(self.cfg),
                "window_rows": self.cfg.window_rows,
                "window_s": self.cfg.window_s,
                "keep_windows": self.cfg.keep_windows,
            },
            "versions": {v: self.windows.report(v) for v in self.versions(version)},
        }
        for v, rep in out["versions"].items():
            rep["feedback"] = feedback.get(v)
            rep["sampled_out_rows"] = self.sampled_out.get(v, 0)
        return json_safe(out)

    def rows_seen(self) -> dict[str, int]:
        """Rows merged so far per monitored version."""
        return {v: self.windows.rows_seen(v) for v in self.windows.versions}

    # ---------------------------------------------------------------- persistence
    def to_checkpoint(self) -> dict[str, Any]:
        """The state a restarted monitor restores (plain JSON; bin edges keep +-inf)."""
        return self.windows.to_dict()


__all__ = ["MAX_VERSIONS", "MonitorCore"]
