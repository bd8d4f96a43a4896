"""Key and field names of the streaming state in Redis.

One hash per (project, stream view, entity): `fs:<project>:<view>:{<key>=<value>}`.
The braces are a Redis Cluster hash tag, so every view's key for one entity
lands in one slot and a request needs one round trip. Inside the hash:

| field | holds |
|---|---|
| `o|<topic>|<partition>` | last applied offset of that source partition (the exactly-once fence) |
| `<column>|<slide_ms>|<tile_start_ms>|<component>` | one partial of one tile (windowed views) |
| `s`, `v` | encoded session state and its version (session views) |
| `_p` | the tile-retention cutoff last applied |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def entity_tag(join_keys: Sequence[str], values: Sequence[Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in zip(join_keys, values, strict=True))


def state_key(project: str, view: str, join_keys: Sequence[str], values: Sequence[Any]) -> str:
    return f"fs:{project}:{view}:{{{entity_tag(join_keys, values)}}}"


def view_key_pattern(project: str, view: str) -> str:
    """A SCAN pattern matching every state key of one view (glob characters in the names escaped)."""
    escaped = re.sub(r"([\\*?\[\]])", r"\\\1", f"fs:{project}:{view}:")
    return escaped + "{*"


def offset_field(topic: str, partition: int) -> str:
    return f"o|{topic}|{partition}"


def parse_tile_field(name: str) -> tuple[str, int, int, str] | None:
    """(column, slide_ms, tile_start_ms, component), or None for a non-tile field."""
    parts = name.split("|")
    if len(parts) != 4 or parts[0] == "o":
        return None
    return parts[0], int(parts[1]), int(parts[2]), parts[3]


def progress_key(project: str, group: str, topic: str) -> str:
    """Per consumer group and topic: `<partition>` -> `<applied offset>:<max event time ms>`."""
    return f"fs:{project}:progress:{group}:{{{topic}}}"
