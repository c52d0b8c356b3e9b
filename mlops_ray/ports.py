"""Free TCP ports for servers that bind them later, in another process. No Ray, no MLflow.

A port is chosen between Ray's default worker port range (10002-19999, bound by every worker a Ray
node starts) and the kernel's ephemeral range (``/proc/sys/net/ipv4/ip_local_port_range``) when the
gap allows: the caller hands the port to another process (HAProxy, Serve's fallback proxy, a
service, the tracking server, a test node's ``ray start``), and a port from either range can be taken
in between, by a Ray worker or as the local port of any outgoing connection (a CI run lost a
service's port to its own Ray cluster's start-up that way). Otherwise the kernel chooses.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
FREE_PORT_LOW = 20_000  # above Ray's default worker port range (10002-19999)
_DEFAULT_EPHEMERAL = (32768, 60999)


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux's default where it cannot be read)."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return lo, hi
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct TCP ports free on ``host`` now (bound together, so never the same one twice).

    ``host`` is an address of this machine in the calling thread's network namespace (IPv6 addresses
    without brackets). Raises ``OSError`` when nothing can be bound on it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lo = ephemeral_range()[0]
    socks: list[socket.socket] = []
    try:
        tries = 0
        while len(socks) < n and tries < 50 * n and lo > FREE_PORT_LOW + 1_000:
            tries += 1
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.bind((host, random.randint(FREE_PORT_LOW, lo - 1)))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:  # fall back to the kernel's choice
            s = socket.socket(family, socket.SOCK_STREAM)
            try:
                s.bind((host, 0))
            except OSError:
                s.close()
                raise
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
