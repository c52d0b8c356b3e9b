"""The drift monitor's checkpoint in the state store (pure): key ``drift/<model>.json``, which the
local store keeps at ``<workspace>/drift/<model>.json``.

The JSON is :meth:`~mlops_ray.drift.core.MonitorCore.to_checkpoint`'s dict written with plain
``json.dumps`` (bin edges keep ``Infinity``, which Python reads back). A checkpoint is replaced
atomically; one that cannot be read or parsed is logged and ignored (the monitor starts empty
rather than staying down).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mlops_ray.state import StateStore

log = logging.getLogger("mlops_ray.drift")


def checkpoint_key(model_name: str) -> str:
    """The state-store key of ``model_name``'s checkpoint (characters other than ``[A-Za-z0-9-_.]`` as ``_``)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    return f"drift/{safe}.json"


class CheckpointStore:
    """Reads and writes one model's monitor checkpoint, at most every ``interval_s`` when asked
    through :meth:`due`. With no state store (``state=None``) nothing is kept."""

    def __init__(self, state: StateStore | None, model_name: str, interval_s: float):
        self.state = state
        self.key = checkpoint_key(model_name)
        self.interval_s = interval_s
        self._last_saved: float | None = None  # time.monotonic() of the last save

    @property
    def location(self) -> str | None:
        """Where the checkpoint lives: the file of a local store, else ``<store uri>/<key>``."""
        if self.state is None:
            return None
        path = self.state.local_path(self.key)
        return str(path) if path is not None else f"{self.state.uri.rstrip('/')}/{self.key}"

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none or it is unreadable."""
        if self.state is None:
            return None
        try:
            data = self.state.read_bytes(self.key)
            return None if data is None else json.loads(data)
        except Exception as err:  # a corrupt checkpoint must not keep the monitor down
            log.warning("drift checkpoint %s unreadable (%s); starting empty", self.location, err)
            return None

    def save(self, state: dict[str, Any], now: float) -> None:
        """Replace the checkpoint with ``state`` (``now``: ``time.monotonic()``)."""
        if self.state is not None:
            self.state.write_bytes(self.key, json.dumps(state).encode())
        self._last_saved = now

    def due(self, now: float) -> bool:
        """Whether ``interval_s`` has passed since the last save (``now``: ``time.monotonic()``)."""
        return self._last_saved is None or now - self._last_saved >= self.interval_s


__all__ = ["CheckpointStore", "checkpoint_key"]
