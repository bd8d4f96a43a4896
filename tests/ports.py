"""Free local ports for the private servers tests start.

Ports come from below the kernel's ephemeral range: a port taken from that range
(bind to 0) can be handed to some outgoing connection's local end in the seconds
between the test picking it and the server (a JVM, for Kafka) binding it.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import psutil

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """A port p such that p .. p + count - 1 are all free (Kafka takes p + 1 for its KRaft controller)."""
    high = _ephemeral_start() - count
    for _ in range(200):
        port = random.randrange(20_000, high)
        if all(_bindable(port + i) for i in range(count)):
            return port
    raise RuntimeError(f"no {count} adjacent free ports below {high}")


def listening_sockets(pid: int, port: int) -> set[str]:
    """The listening sockets on `port` that process `pid` holds, by kernel identity (`socket:[inode]`)."""
    return {os.readlink(f"/proc/{pid}/fd/{c.fd}") for c in psutil.Process(pid).net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
