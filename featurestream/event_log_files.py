"""The event log's files: the contract between the stream materializer that writes them and replay,
rebuild and the offline engine that read them.

One Parquet file per topic, partition and flush, named by its offset range, so a
rewrite after a crash replaces a file instead of adding a second copy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

_NAME = re.compile(r"^(?P<topic>.+)-p(?P<partition>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.parquet$")


def file_name(topic: str, partition: int, first: int, last: int) -> str:
    return f"{partition_prefix(topic, partition)}{first:012d}-{last:012d}.parquet"


def partition_prefix(topic: str, partition: int) -> str:
    """What every file name of one topic and partition starts with (Kafka topic names hold no glob character)."""
    return f"{topic}-p{partition:04d}-o"


class LogFile(NamedTuple):
    path: Path
    topic: str
    partition: int
    first: int
    last: int


def log_files(directory: Path, topic: str | None = None) -> list[LogFile]:
    """The finished files in `directory` (of `topic` only, when given), in (topic, partition, first offset) order."""
    found = []
    for path in directory.iterdir() if directory.is_dir() else ():
        match = _NAME.match(path.name)
        if match and (topic is None or match["topic"] == topic):
            found.append(LogFile(path, match["topic"], int(match["partition"]), int(match["first"]),
                                 int(match["last"])))
    return sorted(found, key=lambda f: (f.topic, f.partition, f.first))


def log_paths(directory: Path) -> list[Path]:
    """The paths of `log_files(directory)`, in the same order."""
    return [file.path for file in log_files(directory)]
