"""`featurestream demo` (what `make demo` runs): the whole story, see featurestream/demo/story.py."""

from __future__ import annotations

from typing import Annotated

import typer

from featurestream.cli.common import console, fail, friendly_errors, settings
from featurestream.cli.generate import _parse_end


@friendly_errors
def demo(
    events: Annotated[int, typer.Option(min=1_000, help="Events to generate and replay.")] = 200_000,
    users: Annotated[int, typer.Option(min=10)] = 5_000,
    items: Annotated[int, typer.Option(min=10)] = 1_000,
    training_rows: Annotated[int, typer.Option(min=100, help="Labelled rows to export and train on.")] = 40_000,
    predictions: Annotated[int, typer.Option(min=1, help="/predict calls in the final burst.")] = 1_000,
) -> None:
    """Services, data, feast apply, batch and streaming features, a training set, a model, serving, predictions."""
    from featurestream.demo.background import DemoError
    from featurestream.demo.story import DemoOptions, run_demo

    try:
        run_demo(console, settings(), DemoOptions(end=_parse_end(None), events=events, users=users, items=items,
                                                  training_rows=training_rows, predictions=predictions))
    except (DemoError, ValueError) as exc:
        raise fail(str(exc)) from None
