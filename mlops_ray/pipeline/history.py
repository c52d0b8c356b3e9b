"""Pipeline history: one JSON record per pipeline run and per trigger decision, in the state store.

Key ``pipeline/<model>/history.jsonl`` (the file ``<workspace>/pipeline/<model>/history.jsonl`` in a
local workspace). Appends go through :meth:`~mlops_ray.state.StateStore.append_record`, which never
loses or interleaves records of concurrent writers (a watcher and a manual ``pipeline run``).

History written before the pipeline controller recorded a succeeded step as ``ran``; readers map it
to ``succeeded`` (:meth:`~mlops_ray.pipeline.controller.StepStatus.parse`).
"""

from __future__ import annotations

import time
from typing import Any

from mlops_ray.pipeline.controller import StepStatus
from mlops_ray.state import StateStore

FILE = "history.jsonl"


def append(store: StateStore, prefix: str, entry: dict[str, Any]) -> None:
    store.append_record(f"{prefix}/{FILE}", {"recorded_at": time.time(), **entry})


def read(store: StateStore, prefix: str, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Entries oldest first (``kind``: "run" or "decision"); unreadable lines are skipped."""
    out = []
    for e in store.read_records(f"{prefix}/{FILE}"):
        if kind is not None and e.get("kind") != kind:
            continue
        for s in e.get("steps") or ():
            try:
                s["status"] = str(StepStatus.parse(s["status"]))
            except (KeyError, ValueError):
                continue
        out.append(e)
    return out[-limit:] if limit else out


def format_runs(entries: list[dict[str, Any]]) -> str:
    """The ``pipeline history`` table."""
    head = (
        f"{'started (UTC)':<19} {'run':<12} {'trigger':<8} {'status':<9} {'steps ran/cached/failed':<24} "
        f"{'version':<7} {'decision':<8} {'seconds':>8}"
    )
    lines = [head]
    ran = (StepStatus.SUCCEEDED, StepStatus.RESUMED)
    for e in entries:
        if e.get("kind") == "decision":
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("at", 0)))
            lines.append(
                f"{at:<19} {'-':<12} {e.get('trigger', ''):<8} {e.get('action', ''):<9} {e.get('reason', '')[:90]}"
            )
            continue
        steps = e.get("steps", [])
        n = [
            sum(s["status"] in ran for s in steps),
            sum(s["status"] == StepStatus.CACHED for s in steps),
            sum(s["status"] == StepStatus.FAILED for s in steps),
        ]
        counts = "/".join(map(str, n))
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.get("started_at", 0)))
        lines.append(
            f"{started:<19} {e.get('run_id', ''):<12} {e.get('trigger', ''):<8} {e.get('status', ''):<9} "
            f"{counts:<24} {str(e.get('version') or '-'):<7} {str(e.get('decision') or '-'):<8} "
            f"{e.get('seconds', 0):>8.1f}"
        )
    return "\n".join(lines)


__all__ = ["append", "format_runs", "read"]
