"""A watchdog process that ends what a process started once that process is gone, however it ended.

``mlops-ray serve`` starts one (:func:`start_reaper`). Ray's raylet and GCS die with the driver
that started them, but its agents (dashboard agent, runtime-env agent), workers that are
mid-task and a HAProxy started by a Serve actor can outlive a driver killed with SIGKILL. The
reaper polls: while its owner lives it remembers the owner's process tree; when the owner
is gone it kills every remembered process that is still the same process (pid *and* start
time), then exits. Run it as ``python -m mlops_ray.reaper OWNER_PID [MARK]``; processes whose
command line contains ``MARK`` (e.g. the owner's private HAProxy directory) are included.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

POLL_S = 0.5


def _tree(owner, mark: str | None) -> dict[int, float]:
    import psutil

    procs = {}
    try:
        for p in owner.children(recursive=True):
            try:
                procs[p.pid] = p.create_time()
            except psutil.Error:
                continue
    except psutil.Error:
        return procs
    procs.update(_tree_by_mark(mark))
    return procs


def kill_remembered(procs: dict[int, float]) -> list[int]:
    """Kill each ``pid`` still running with the same start time (never a recycled pid)."""
    import psutil

    killed = []
    for pid, started in procs.items():
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01 and pid != os.getpid():
                p.kill()
                killed.append(pid)
        except psutil.Error:
            continue
    return killed


def watch(owner_pid: int, mark: str | None = None, poll_s: float = POLL_S) -> list[int]:
    """Block until ``owner_pid`` is gone, then kill what it had started; returns the killed pids."""
    import psutil

    try:
        owner = psutil.Process(owner_pid)
        owner_started = owner.create_time()
    except psutil.Error:
        return []
    remembered: dict[int, float] = {}
    while True:
        try:
            alive = owner.is_running() and owner.create_time() == owner_started and owner.status() != "zombie"
        except psutil.Error:
            alive = False
        if not alive:
            remembered.update(_tree_by_mark(mark))
            return kill_remembered(remembered)
        remembered.update(_tree(owner, mark))
        time.sleep(poll_s)


def _tree_by_mark(mark: str | None) -> dict[int, float]:
    import psutil

    out = {}
    if mark:
        for p in psutil.process_iter(["pid", "cmdline", "create_time"]):
            if mark in " ".join(p.info["cmdline"] or []):
                out[p.info["pid"]] = p.info["create_time"]
    return out


def start_reaper(mark: str | None = None) -> subprocess.Popen:
    """Start a reaper for this process (detached into its own session, so a signal sent to our
    process group does not end it before it has done its work)."""
    args = [sys.executable, "-m", "mlops_ray.reaper", str(os.getpid())] + ([mark] if mark else [])
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


if __name__ == "__main__":  # pragma: no cover - exercised by the e2e shutdown tests
    watch(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None)
