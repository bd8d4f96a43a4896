"""`featurestream demo`: the whole story, end to end, from an empty checkout."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from featurestream.cli.common import console, friendly_errors, settings
from featurestream.cli.generate import _parse_end, run_generate
from featurestream.cli.repo import apply_repo, specs_table
from featurestream.cli.services import _table
from featurestream.generate import GenerateConfig
from featurestream.services import services_up


@friendly_errors
def demo(
    events: Annotated[int, typer.Option(min=0, help="Events to generate.")] = 100_000,
    users: Annotated[int, typer.Option(min=1)] = 5_000,
    items: Annotated[int, typer.Option(min=1)] = 1_000,
) -> None:
    """Start the services, generate data, apply the feature repo and show what is there."""
    began = time.monotonic()
    config = settings()
    console.rule("1. services")
    console.print(_table(services_up(config)))
    console.rule("2. demo data")
    run_generate(GenerateConfig(out_dir=config.repo_path / "data", end=_parse_end(None), users=users,
                                items=items, events=events))
    console.rule("3. feature definitions (feast apply)")
    console.print(specs_table(apply_repo(config.repo_path)))
    console.rule("done")
    console.print(f"demo finished in {time.monotonic() - began:.1f} s; stop the services with "
                  "`featurestream services down`")
