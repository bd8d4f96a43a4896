"""`featurestream export`: a point-in-time-correct training set as Parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TimeElapsedColumn

from featurestream.cli.common import console, fail, friendly_errors, settings

STAGES = {"events": "event-log files through the udf", "join": "entity rows joined"}


@friendly_errors
def export_command(
    entities: Annotated[Path, typer.Option("--entities", "-e", help="Entity rows: Parquet or CSV with the join "
                                           "keys, an event_timestamp column and any request fields.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The training set to write (Parquet).")],
    feature_service: Annotated[str | None, typer.Option("--feature-service", "-s", help="A FeatureService.")] = None,
    features: Annotated[list[str] | None, typer.Option("--features", "-f", help="view:feature references "
                                                       "(repeatable, or comma-separated).")] = None,
    full_feature_names: Annotated[bool, typer.Option(help="Name columns view__feature, as Feast does.")] = False,
    timestamp_column: Annotated[str | None, typer.Option(help="The entity rows' time column "
                                                         "(default: event_timestamp).")] = None,
) -> None:
    """Join batch, windowed, session and on-demand features onto entity rows, each as of its row's time."""
    from featurestream.offline import OfflineError, export_to_parquet

    refs = [ref.strip() for item in features or [] for ref in item.split(",") if ref.strip()] or None
    if (refs is None) == (feature_service is None):
        raise fail("give exactly one of --feature-service or --features")
    config = settings()
    tasks: dict[str, TaskID] = {}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            summary = export_to_parquet(config.repo_path, entities, out, features=refs,
                                        feature_service=feature_service, full_feature_names=full_feature_names,
                                        timestamp_column=timestamp_column, progress=progress)
        except OfflineError as exc:
            raise fail(str(exc)) from None
    console.print(f"wrote {summary.rows:,} rows x {len(summary.columns)} columns to {out} in {summary.seconds:.1f} s")
