"""Closed-loop HTTP load from wrk: C keep-alive connections, each sending its next request as soon as the
previous answer is read, cycling through the given bodies.

wrk (C, one epoll thread) costs the two shared cores far less per request than any Python client, so the
servers get the CPU; its latency histogram has microsecond resolution. A Lua script holds the bodies and
prints wrk's summary as one JSON line. Install it with `apt-get install wrk` (Debian) or `brew install wrk`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = """
local bodies = {%s}
local requests = {}
local next_request = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for i, body in ipairs(bodies) do
  requests[i] = wrk.format(nil, nil, nil, body)  -- formatted once: wrk's own CPU stays off the shared cores
end
request = function()
  next_request = next_request %% #requests + 1
  return requests[next_request]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n{"requests": %%d, "duration_us": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_string(body: bytes) -> str:
    """A Lua long string holding `body` verbatim (its level chosen so the body cannot close it)."""
    text = body.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def load(port: int, path: str, bodies: list[bytes], concurrency: int, seconds: float,
         warmup: float = 1.0) -> LoadResult:
    """POST `bodies` in turn to `path` over `concurrency` connections for `seconds` (after a warm-up run)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("the serving benchmark needs wrk: apt-get install wrk (or brew install wrk)")
    with tempfile.TemporaryDirectory(prefix="fs-wrk-") as tmp:
        script = Path(tmp) / "bodies.lua"
        script.write_text(_SCRIPT % ", ".join(map(_lua_string, bodies)))
        url = f"http://127.0.0.1:{port}{path}"

        def run(duration: float) -> dict[str, int]:
            result = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
                                     "--timeout", "10s", "-s", str(script), url],
                                    capture_output=True, text=True, check=True)
            return json.loads(result.stdout.strip().splitlines()[-1])

        run(warmup)
        report = run(seconds)
    return LoadResult(report["requests"], report["errors"], report["duration_us"] / 1e6,
                      report["p50_us"] / 1000, report["p99_us"] / 1000)
