"""Durations as people write them in tags and flags ("30m", "1h30m", "90s", "250ms")."""

import re

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration_ms(text: str) -> int:
    """Milliseconds in `text`; raises ValueError with the accepted forms when it does not parse."""
    cleaned = text.strip().lower().replace(" ", "")
    pos, total = 0, 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise ValueError(
            f"cannot parse duration {text!r}: use a number with a unit ms, s, m, h, d or w, "
            "for example '30m' or '1h30m'"
        )
    if total <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return round(total)
