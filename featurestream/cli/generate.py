"""`featurestream generate`: the seeded synthetic demo data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from featurestream.cli.common import console, fail, friendly_errors, settings
from featurestream.generate import GenerateConfig, GenerateSummary, generate_demo_data


def _parse_end(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        end = datetime.fromisoformat(text)
    except ValueError:
        raise fail(f"--end {text!r} is not an ISO-8601 time such as 2026-11-27T00:00:00Z") from None
    return end.replace(tzinfo=UTC) if end.tzinfo is None else end.astimezone(UTC)


def run_generate(config: GenerateConfig) -> GenerateSummary:
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("generating events", total=config.events)
        summary = generate_demo_data(config, progress=lambda done, total: bar.update(task, completed=done, total=total))
    console.print(
        f"wrote {summary.events:,} events ({summary.out_of_order:,} out of order, {summary.late:,} late, "
        f"{summary.malformed:,} malformed) to {summary.events_path}\n"
        f"wrote {summary.snapshot_rows_user:,} user_profile rows to {summary.user_profile_path}\n"
        f"wrote {summary.snapshot_rows_item:,} item_stats rows to {summary.item_stats_path}\n"
        f"events span {summary.first_event:%Y-%m-%d %H:%M:%S} .. {summary.last_event:%Y-%m-%d %H:%M:%S} UTC"
    )
    return summary


@friendly_errors
def generate(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: the feature repo's data/).")] = None,
    users: Annotated[int, typer.Option(min=1)] = 10_000,
    items: Annotated[int, typer.Option(min=1)] = 2_000,
    days: Annotated[int, typer.Option(min=1, help="Daily batch snapshots.")] = 7,
    events: Annotated[int, typer.Option(min=0)] = 200_000,
    event_hours: Annotated[float, typer.Option(min=0.01, help="Events span this many hours before --end.")] = 24.0,
    end: Annotated[str | None, typer.Option(help="ISO time the data ends at (default: this UTC hour).")] = None,
    seed: Annotated[int, typer.Option()] = 42,
    lateness_ms: Annotated[int, typer.Option(min=0, help="Allowed lateness of the clicks source.")] = 60_000,
    out_of_order: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction arriving out of order.")] = 0.02,
    late: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction arriving beyond the lateness.")] = 0.001,
    malformed: Annotated[float, typer.Option(min=0.0, max=0.99, help="Fraction of malformed records.")] = 0.0,
) -> None:
    """Write seeded synthetic users, items, daily snapshots and a clickstream; the same seed and --end give identical files."""
    try:
        config = GenerateConfig(
            out_dir=(out or settings().repo_path / "data").resolve(), end=_parse_end(end), users=users, items=items,
            days=days, events=events, event_hours=event_hours, seed=seed, lateness_ms=lateness_ms,
            out_of_order_fraction=out_of_order, late_fraction=late, malformed_fraction=malformed,
        )
    except ValueError as exc:
        raise fail(str(exc)) from None
    run_generate(config)
