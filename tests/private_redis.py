"""A private redis-server for tests that stop, pause or kill it (the shared one is never touched)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_timeout=1).ping():
                return process
        except redis.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"redis-server did not start on port {port}")
