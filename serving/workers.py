"""Worker processes that each listen on a socket of their own (SO_REUSEPORT), so the kernel spreads connections.

uvicorn's workers share one listening socket, and the first to wake accepts every
connection waiting. A client opening a pool of keep-alive connections at once (wrk's
8, a service's connection pool) often lands all of them on one worker, which then does
all the work: 8,100 req/s on one busy worker here where both give 9,700. With a socket per
worker the kernel hashes each new connection to one of them. uvicorn's supervisor still
starts, watches and restarts the workers: each is handed a `ReusePortListener`, which
becomes a fresh socket when the worker unpickles it.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def _tcp_socket(host: str) -> socket.socket:
    """A TCP socket for `host`'s address family that may bind a port still in TIME_WAIT, as uvicorn's does."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def listen_reusing_port(host: str, port: int, backlog: int) -> socket.socket:
    """A worker's own socket; failing, the worker exits as a startup failure, which the supervisor does not retry."""
    sock = _tcp_socket(host)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        logger.error("worker cannot listen on %s:%d: %s", host, port, exc)
        sys.exit(STARTUP_FAILURE)
    return sock


class ReusePortListener:
    """What uvicorn's supervisor passes to each worker in place of a shared socket."""

    def __init__(self, host: str, port: int, backlog: int) -> None:
        self.address = (host, port, backlog)

    def __reduce__(self) -> tuple[Any, tuple[str, int, int]]:
        return listen_reusing_port, self.address


def ensure_port_free(host: str, port: int) -> None:
    """Raise OSError when something listens there already, another featurestream server included.

    The probe does not set SO_REUSEPORT: the workers of a server running there hold the
    port with it, and two servers silently sharing one port is never what was meant.
    """
    with _tcp_socket(host) as probe:
        probe.bind((host, port))


def run_workers(config: uvicorn.Config) -> None:
    """uvicorn's multiprocess supervisor, with a listening socket per worker."""
    if not config.port:
        raise ValueError("several workers need a fixed port: with port 0 each would listen on a port of its own")
    ensure_port_free(config.host, config.port)
    listener = ReusePortListener(config.host, config.port, config.backlog)
    Multiprocess(config, sockets=[listener]).run()  # type: ignore[list-item]
