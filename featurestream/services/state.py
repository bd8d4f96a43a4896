"""What `services up/status` report about one service."""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(RuntimeError):
    """A service that cannot be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ServiceState:
    name: str
    address: str
    how: str  # "local" (started by us), "docker", "external" (someone else's), "down"
    pid: int | None = None
    started: bool = False  # started by this very call

    @property
    def running(self) -> bool:
        return self.how != "down"
