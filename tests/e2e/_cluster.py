"""Helpers for end-to-end tests that start their own `ray start --head` clusters (not a conftest)."""

from __future__ import annotations

import time

import psutil


def stop_cluster(gcs_port: int, timeout: float = 30.0) -> None:
    """Stop only the cluster whose GCS listens on ``gcs_port``.

    `ray stop --force` would kill every Ray process on the machine, including the test session's
    own cluster (and with it the pytest process that is its driver).
    """
    marks = (f":{gcs_port}", f"={gcs_port}")
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(m in arg for arg in cmd for m in marks) and ("ray" in " ".join(cmd)):
            procs.append(p)
    for p in procs:
        try:
            for c in p.children(recursive=True):
                procs.append(c)
        except psutil.Error:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    time.sleep(0.5)
    # like `ray stop`: forget the bootstrap address if it names the cluster we just stopped
    import pathlib

    current = pathlib.Path("/tmp/ray/ray_current_cluster")
    try:
        if current.exists() and str(gcs_port) in current.read_text():
            current.unlink()
    except OSError:
        pass
