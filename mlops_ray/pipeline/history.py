"""Pipeline history: one JSON line per pipeline run and per trigger decision (pure file I/O).

``<workspace>/pipeline/<model>/history.jsonl``; appends are single ``write`` calls of one line
(atomic for lines this short on a local file system), so a watcher and a manual ``pipeline run``
can both append.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

FILE = "history.jsonl"


def append(directory: Path, entry: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"recorded_at": time.time(), **entry}, default=str)
    with open(directory / FILE, "a") as f:
        f.write(line + "\n")


def read(directory: Path, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first (``kind``: "run" or "decision"); unreadable lines are skipped."""
    path = directory / FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if kind is None or e.get("kind") == kind:
            out.append(e)
    return out[-limit:] if limit else out


def format_runs(entries: list[dict[str, Any]]) -> str:
    """The ``pipeline history`` table."""
    head = (
        f"{'started (UTC)':<19} {'run':<12} {'trigger':<8} {'status':<9} {'steps ran/cached/failed':<24} "
        f"{'version':<7} {'decision':<8} {'seconds':>8}"
    )
    lines = [head]
    for e in entries:
        if e.get("kind") == "decision":
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("at", 0)))
            lines.append(
                f"{at:<19} {'-':<12} {e.get('trigger', ''):<8} {e.get('action', ''):<9} {e.get('reason', '')[:90]}"
            )
            continue
        steps = e.get("steps", [])
        counts = "/".join(str(sum(s["status"] == k for s in steps)) for k in ("ran", "cached", "failed"))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("started_at", 0)))
        lines.append(
            f"{started:<19} {e.get('run_id', ''):<12} {e.get('trigger', ''):<8} {e.get('status', ''):<9} "
            f"{counts:<24} {str(e.get('version') or '-'):<7} {str(e.get('decision') or '-'):<8} "
            f"{e.get('seconds', 0):>8.1f}"
        )
    return "\n".join(lines)


__all__ = ["append", "format_runs", "read"]
