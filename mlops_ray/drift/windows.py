"""The drift monitor's state, without Ray: per model version, bin counts merged into windows (pure).

A window closes at the first push that brings it to ``window_rows`` rows, or ``window_s``
seconds after its first row (so low traffic still closes windows; an empty window never
closes). Closed windows are evaluated once (:func:`mlops_ray.drift.reference.evaluate`) and the
last ``keep_windows`` per version are kept. Counts of different versions never mix: each
version has its own reference and its own windows.

The state round-trips through :meth:`WindowStore.to_dict` / :meth:`WindowStore.from_dict`
(plain JSON), which is what the monitor checkpoints.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops_ray.drift.reference import DriftReference, evaluate, merge_counts


@dataclass
class Window:
    index: int
    start: float | None = None  # time of the first row
    end: float | None = None  # time it closed
    rows: int = 0
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "rows": self.rows,
            "closed": self.end is not None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.describe(), "counts": {k: v.tolist() for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Window":
        counts = {k: np.asarray(v, dtype=np.int64) for k, v in d["counts"].items()}
        return cls(d["index"], d["start"], d["end"], d["rows"], counts)


@dataclass
class VersionWindows:
    reference_stats: dict
    current: Window
    closed: deque  # of (Window, evaluation)
    total_rows: int = 0
    registered_at: float = 0.0

    def __post_init__(self):
        self.reference = DriftReference.from_stats(self.reference_stats)


class WindowStore:
    """Windows of every monitored version of one model."""

    def __init__(self, model: str, *, window_rows: int, window_s: float, keep_windows: int, limits: dict[str, Any]):
        self.model = model
        self.window_rows, self.window_s, self.keep_windows = window_rows, window_s, keep_windows
        self.limits = dict(limits)  # psi_warn, psi_alert, alpha, min_rows
        self.versions: dict[str, VersionWindows] = {}
        self.dropped_rows = 0  # pushed for a version never registered

    # -------------------------------------------------------------- updates
    def register(self, version: str, reference_stats: dict, now: float) -> bool:
        """Start monitoring ``version`` (idempotent); True if it is new."""
        if version in self.versions:
            return False
        self.versions[version] = VersionWindows(reference_stats, Window(0), deque(maxlen=self.keep_windows), 0, now)
        return True

    def add(self, version: str, counts: dict[str, Any], rows: int, now: float) -> list[dict[str, Any]]:
        """Merge a push; returns the evaluations of the windows it closed."""
        v = self.versions.get(version)
        if v is None:
            self.dropped_rows += rows
            return []
        w = v.current
        if w.start is None:
            w.start = now
        merge_counts(w.counts, counts)
        w.rows += rows
        v.total_rows += rows
        return [self._close(version, v, now)] if w.rows >= self.window_rows else []

    def tick(self, now: float) -> list[dict[str, Any]]:
        """Close windows older than ``window_s``; returns their evaluations."""
        out = []
        for version, v in self.versions.items():
            w = v.current
            if w.rows and w.start is not None and now - w.start >= self.window_s:
                out.append(self._close(version, v, now))
        return out

    def _close(self, version: str, v: VersionWindows, now: float) -> dict[str, Any]:
        w = v.current
        w.end = now
        ev = self._evaluate(version, v, w)
        v.closed.append((w, ev))
        v.current = Window(w.index + 1)
        return ev

    # -------------------------------------------------------------- reading
    def _evaluate(self, version: str, v: VersionWindows, w: Window) -> dict[str, Any]:
        return evaluate(
            v.reference, w.counts, **self.limits, model=self.model, model_version=version, window=w.describe()
        )

    def report(self, version: str) -> dict[str, Any]:
        """``{"current": evaluation of the window in progress, "windows": closed ones, oldest first}``."""
        v = self.versions[version]
        return {
            "current": self._evaluate(version, v, v.current),
            "windows": [ev for _, ev in v.closed],
            "total_rows": v.total_rows,
            "reference": {
                "rows": v.reference.rows,
                "snapshot_id": v.reference_stats.get("snapshot_id"),
                "has_prediction": v.reference.prediction is not None,
            },
        }

    def latest(self, version: str) -> dict[str, Any]:
        """The last closed window's evaluation, else the window in progress."""
        v = self.versions[version]
        return v.closed[-1][1] if v.closed else self._evaluate(version, v, v.current)

    def rows_seen(self, version: str) -> int:
        v = self.versions.get(version)
        return v.total_rows if v else 0

    # -------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "dropped_rows": self.dropped_rows,
            "versions": {
                ver: {
                    "reference_stats": v.reference_stats,
                    "registered_at": v.registered_at,
                    "total_rows": v.total_rows,
                    "current": v.current.to_dict(),
                    "closed": [w.to_dict() for w, _ in v.closed],
                }
                for ver, v in self.versions.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], **params: Any) -> "WindowStore":
        store = cls(d["model"], **params)
        store.dropped_rows = int(d.get("dropped_rows", 0))
        for ver, s in d["versions"].items():
            v = VersionWindows(
                s["reference_stats"],
                Window.from_dict(s["current"]),
                deque(maxlen=store.keep_windows),
                int(s["total_rows"]),
                float(s["registered_at"]),
            )
            for wd in s["closed"]:
                w = Window.from_dict(wd)
                v.closed.append((w, store._evaluate(ver, v, w)))
            store.versions[ver] = v
        return store


__all__ = ["Window", "WindowStore"]
