"""Rate-limited logging of unexpected errors (pure; no Ray).

A request that fails with a 5xx is logged as one line with its request id, never one
traceback per request: at most one line per ``interval_s`` per replica (the next line
carries how many were suppressed), and a traceback only the first time an exception type
is seen. A flood of bad requests therefore costs a few lines a second, not a console full.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LogDecision:
    line: bool  # log a one-line summary now
    traceback: bool  # with the traceback: the first error of this type
    suppressed: int  # lines suppressed since the last one logged (to report on this one)


class ErrorLogLimiter:
    """Decides, per failed request, what to log. ``clock`` is injectable for tests."""

    def __init__(self, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic, max_types: int = 64):
        self.interval_s = interval_s
        self.clock = clock
        self.max_types = max_types
        self._seen: set[str] = set()
        self._last: float | None = None
        self._suppressed = 0

    def decide(self, kind: str) -> LogDecision:
        """``kind``: the exception type's name. A new type is always logged, with its traceback."""
        now = self.clock()
        first = kind not in self._seen and len(self._seen) < self.max_types
        if first:
            self._seen.add(kind)
        if first or self._last is None or now - self._last >= self.interval_s:
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
            return LogDecision(True, first, suppressed)
        self._suppressed += 1
        return LogDecision(False, False, 0)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters, encodable (safe for any log handler)."""
    flat = " ".join(text.split())
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    return flat.encode("utf-8", "backslashreplace").decode("utf-8")
