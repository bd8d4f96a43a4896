"""What `featurestream generate` is asked for and what it reports, kept apart so the CLI can import them cheaply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class GenerateConfig:
    """Seeded demo data. User ids are 1..users and item ids 1..items; the same config gives byte-identical files."""

    out_dir: Path                 # usually feature_repo/data
    end: datetime                 # tz-aware UTC; events and snapshots end here
    users: int = 10_000
    items: int = 2_000
    days: int = 7                 # daily batch snapshots for this many days before `end`
    events: int = 200_000
    event_hours: float = 24.0     # events span [end - event_hours, end)
    seed: int = 42
    lateness_ms: int = 60_000     # the KafkaSource's allowed lateness (watermark_delay_threshold)
    out_of_order_fraction: float = 0.02   # events delayed in arrival order but within lateness
    late_fraction: float = 0.001          # events delayed far beyond lateness (should be dead-lettered)
    malformed_fraction: float = 0.0       # malformed records mixed in, for tests

    def __post_init__(self) -> None:
        """Reject impossible requests up front, with every problem in one message."""
        problems = []
        if self.end.tzinfo is None or self.end.utcoffset() is None:
            problems.append("end must be timezone-aware (UTC)")
        for name in ("users", "items", "days"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if min(self.events, self.lateness_ms, self.seed) < 0:
            problems.append("events, lateness_ms and seed must not be negative")
        if not self.event_hours > 0:
            problems.append("event_hours must be positive")
        if not 0 <= self.malformed_fraction < 1:
            problems.append("malformed_fraction must be in [0, 1): it is the share of all lines")
        fractions = (self.out_of_order_fraction, self.late_fraction)
        if min(fractions) < 0 or sum(fractions) > 1:
            problems.append("out_of_order_fraction and late_fraction must be non-negative and sum to at most 1")
        if problems:
            raise ValueError("invalid generate config: " + "; ".join(problems))


@dataclass(frozen=True)
class GenerateSummary:
    """What was written, counted from the data itself so the CLI can report it and tests can check it."""

    user_profile_path: Path
    item_stats_path: Path
    events_path: Path
    users: int
    items: int
    snapshot_rows_user: int
    snapshot_rows_item: int
    events: int                    # good events written (incl. out-of-order and late)
    out_of_order: int
    late: int
    malformed: int
    first_event: datetime          # equal to `end` when no event was asked for
    last_event: datetime
