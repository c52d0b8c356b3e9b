"""Which process owns something (a staging directory, an MLflow run, a registry lock), and is it gone?

An owner record is host name + pid + the process's start time (so a reused pid is not
mistaken for the owner) + the pid namespace (so two containers with one host name do
not judge each other's pids). :meth:`ProcessOwner.is_gone` answers True only when the
owner is certainly dead: on another host or in another pid namespace it cannot tell and
answers None, and callers then leave the thing alone (or fall back to a lease).

Pure: standard library only.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def process_start(pid: int) -> str | None:
    """The process's start time since boot in clock ticks (Linux), or None where /proc has none."""
    f = _proc_stat(pid)
    return f[19] if f and len(f) > 19 else None


def _pid_namespace() -> str:
    """Boot id + pid-namespace inode: equal only for processes that can see each other's pids."""
    parts = []
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return ":".join(parts)


@dataclass(frozen=True)
class ProcessOwner:
    host: str
    pid: int
    started: str | None = None
    namespace: str = ""

    @classmethod
    def current(cls) -> "ProcessOwner":
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start(pid), _pid_namespace())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProcessOwner | None":
        """None when ``d`` is not an owner record (missing or malformed fields)."""
        try:
            return cls(str(d["host"]), int(d["pid"]), d.get("started"), str(d.get("namespace") or ""))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"

    def is_gone(self) -> bool | None:
        """True: the owner process has exited. False: it runs. None: cannot tell from here."""
        me = ProcessOwner.current()
        if self.host != me.host or (self.namespace and me.namespace and self.namespace != me.namespace):
            return None
        if self.pid == me.pid:
            return self.started is not None and me.started is not None and self.started != me.started
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # exists, owned by another user
            pass
        except OSError:
            return None
        stat = _proc_stat(self.pid)
        if stat is not None:
            if stat[0] in ("Z", "X"):  # exited, not yet reaped
                return True
            if self.started is not None and len(stat) > 19 and stat[19] != self.started:
                return True  # the pid was reused by another process
        return False
