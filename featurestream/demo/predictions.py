"""A burst of `/predict` calls against the running serving API, timed from the client's side."""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from featurestream.demo.background import DemoError


@dataclass
class Burst:
    latencies_ms: list[float] = field(default_factory=list)
    samples: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (request, answer)

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def per_second(self) -> float:
        return len(self.latencies_ms) / (sum(self.latencies_ms) / 1000) if self.latencies_ms else 0.0


def predict_burst(port: int, service: str, rows: list[dict[str, Any]], keep: int = 5) -> Burst:
    """One request per row (its join keys as entities, `candidate_price` as request data), over one connection."""
    burst = Burst()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for row in rows:
            body = {"feature_service": service,
                    "entities": {"user_id": [row["user_id"]], "item_id": [row["item_id"]]},
                    "request_data": {"candidate_price": [row["candidate_price"]]}}
            began = time.perf_counter()
            connection.request("POST", "/predict", orjson.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            burst.latencies_ms.append((time.perf_counter() - began) * 1000)
            if response.status != 200:
                raise DemoError(f"/predict answered {response.status}: {payload.decode(errors='replace')[:300]}")
            if len(burst.samples) < keep:
                burst.samples.append((row, orjson.loads(payload)))
    finally:
        connection.close()
    return burst
