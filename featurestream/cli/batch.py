"""`featurestream materialize batch`: batch features from DuckDB into Redis, in Feast's layout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import redis
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

from featurestream.cli.common import console, fail, friendly_errors, settings
from featurestream.definitions import load_repo


def _epoch_ms(text: str, option: str) -> int:
    """An ISO time (UTC when it names no zone) as epoch milliseconds."""
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"{option} {text!r} is not an ISO time such as 2026-11-20T00:00:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return round(stamp.timestamp() * 1000)


@friendly_errors
def materialize_batch(
    start: Annotated[str | None, typer.Option(help="First row time to copy (ISO, inclusive).")] = None,
    end: Annotated[str | None, typer.Option(help="Last row time to copy (ISO, inclusive; default now).")] = None,
    incremental: Annotated[bool, typer.Option("--incremental", help="Start each view where its last run "
                                              "ended (first run: end minus the view's ttl).")] = False,
    feature_view: Annotated[list[str] | None, typer.Option("--feature-view", "-v",
                                                          help="Only these batch views (repeatable).")] = None,
) -> None:
    """Copy the newest row per entity in the range into Redis, exactly as `feast materialize` lays it out."""
    from materializers.batch.runner import materialize

    if incremental == (start is not None):
        raise fail("give --start (with an optional --end) or --incremental")
    config = settings()
    specs = load_repo(config.repo_path)
    end_ms = _epoch_ms(end, "--end") if end else round(datetime.now(UTC).timestamp() * 1000)
    start_ms = _epoch_ms(start, "--start") if start else None
    if start_ms is not None and start_ms > end_ms:
        raise fail(f"--start {start} is after --end")
    client = redis.Redis.from_url(config.redis_url, socket_timeout=30)
    tasks: dict[str, TaskID] = {}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:

        def progress(view: str, done: int, total: int) -> None:
            if view not in tasks:
                tasks[view] = bar.add_task(view, total=total)
            bar.update(tasks[view], completed=done, total=total)

        try:
            runs = materialize(specs, config.repo_path, client, feature_view, end_ms, start_ms, progress)
        except (ValueError, redis.RedisError) as exc:
            raise fail(str(exc)) from None
    for run in runs:
        span = f"{_iso(run.start_ms)} .. {_iso(run.end_ms)}"
        console.print(f"{run.view}: {run.rows:,} entities in {span}, {run.written:,} written "
                      f"in {run.seconds:.1f} s ({run.rows / max(run.seconds, 1e-9):,.0f} rows/s)")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
