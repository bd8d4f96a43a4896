"""Key and field names of the streaming state in Redis.

One hash per (project, stream view, entity): `fs:<project>:<view>:{<key>=<value>}`.
The braces are a Redis Cluster hash tag, so every view's key for one entity
lands in one slot and a request needs one round trip. Inside the hash:

| field | holds |
|---|---|
| `s` | the encoded state: live tiles (windowed views, see `series`) or sessions (`featurestream.windows.sessions`) |
| `v` | the state's version, a token unique to the write (the compare-and-set's check) |
| `o|<topic>|<partition>` | last applied offset of that source partition (the exactly-once fence) |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


class OldLayoutError(RuntimeError):
    """A state key written by an older featurestream layout: reading it as the current one would lose its history."""


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


def progress_key(project: str, group: str, topic: str) -> str:
    """Per consumer group and topic: `<partition>` -> `<applied offset>:<max event time ms>`."""
    return f"fs:{project}:progress:{group}:{{{topic}}}"
