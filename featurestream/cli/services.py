"""`featurestream services up/down/status`."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from featurestream.cli.common import console, friendly_errors, settings
from featurestream.services import SERVICES, ServiceState, services_down, services_status, services_up

app = typer.Typer(help="Start, stop and show the local Kafka broker and Redis server.", no_args_is_help=True)

Names = Annotated[list[str] | None, typer.Argument(help=f"Which services ({', '.join(SERVICES)}); all by default.")]


def _table(states: list[ServiceState]) -> Table:
    table = Table("service", "address", "state", "pid")
    for s in states:
        label = {"local": "running (started by featurestream)", "docker": "running (docker compose)",
                 "external": "running (not ours)", "down": "[red]down[/]"}[s.how]
        table.add_row(s.name, s.address, label + (" [green]started now[/]" if s.started else ""), str(s.pid or "-"))
    return table


@app.command()
@friendly_errors
def up(
    names: Names = None,
    docker: Annotated[bool, typer.Option(help="Use docker compose for Kafka where a Docker engine runs.")] = True,
    print_started: Annotated[
        bool, typer.Option("--print-started", help="Print only the names of the services this call started.")
    ] = False,
) -> None:
    """Start Kafka (KRaft) and Redis unless they already answer; a second `up` changes nothing."""
    began = time.monotonic()
    states = services_up(settings(), names or SERVICES, use_docker=docker)
    if print_started:
        print(" ".join(s.name for s in states if s.started))
        return
    console.print(_table(states))
    console.print(f"ready in {time.monotonic() - began:.1f} s")


@app.command()
@friendly_errors
def down(names: Names = None) -> None:
    """Stop what `services up` started; never anything it did not start."""
    stopped = services_down(settings(), names or SERVICES)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing of ours was running")


@app.command()
@friendly_errors
def status() -> None:
    """Show what runs where; exit code 1 when a service is down."""
    states = services_status(settings())
    console.print(_table(states))
    if not all(s.running for s in states):
        raise typer.Exit(1)
