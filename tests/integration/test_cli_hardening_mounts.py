"""A read-only workspace and a full disk, for real, are one ``error:`` line with exit 2 (no Ray).

Each runs the CLI in a subprocess inside a private mount namespace (``unshare``): a read-only bind
mount of the workspace, and a 64 KiB tmpfs as the workspace (the host sees neither mount). Skipped
where unprivileged mount namespaces are unavailable. The in-process (simulated) versions are in
``tests/unit/test_cli_hardening.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _cli_process import write_config


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "mount", "-t", "tmpfs", "tmpfs", "/mnt"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(not _can_unshare(), reason="needs unprivileged mount namespaces (unshare -rm)")


def _cli_in_namespace(mount_cmd: str, workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m mlops_ray.cli ARGS`` in a private mount namespace after ``mount_cmd`` (the host sees no mount)."""
    cli = " ".join([sys.executable, "-m", "mlops_ray.cli", *args])
    script = f"set -e; {mount_cmd}; exec {cli}"
    env = dict(os.environ, MLOPS_RAY_HOME=str(workspace))
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=300, cwd=Path.cwd()
    )


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    """Exit 2 and exactly one ``error:`` line on stderr (library warnings aside), no traceback."""
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


@pytest.mark.integration  # slow (subprocesses), no Ray: kept out of the fast tier
@needs_unshare
def test_read_only_workspace_is_a_clean_error(tmp_path, small_config, workspace):
    """A real read-only bind mount of the workspace (chmod does not stop root)."""
    p = write_config(tmp_path, small_config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    ws = workspace.root
    proc = _cli_in_namespace(
        f"mount --bind {ws} {ws}; mount -o remount,bind,ro {ws}",
        ws,
        "data",
        "prepare",
        "--config",
        str(p),
        "--engine",
        "local",
    )
    line = _one_error_line(proc)
    assert line.startswith("error: cannot write ") and "read-only" in line and str(ws) in line


@pytest.mark.integration  # slow (subprocesses), no Ray: kept out of the fast tier
@needs_unshare
def test_full_disk_is_a_clean_error(tmp_path, small_config, workspace):
    """A real full disk: the workspace is a 64 KiB tmpfs, too small for the snapshot's split files."""
    p = write_config(tmp_path, small_config)
    workspace.root.mkdir(parents=True, exist_ok=True)
    ws = workspace.root
    proc = _cli_in_namespace(
        f"mount -t tmpfs -o size=64k tmpfs {ws}", ws, "data", "prepare", "--config", str(p), "--engine", "local"
    )
    line = _one_error_line(proc)
    assert line.startswith("error: no space left on the disk holding ") and str(ws) in line
