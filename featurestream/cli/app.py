"""The root `featurestream` command: one sub-command per part of the product."""

import typer

from featurestream.cli import services
from featurestream.cli.batch import materialize_batch
from featurestream.cli.export import export_command
from featurestream.cli.stream import materialize_app, rebuild_command, replay_command
from featurestream.cli.demo import demo
from featurestream.cli.generate import generate
from featurestream.cli.repo import apply, show
from featurestream.cli.serve import serve

app = typer.Typer(
    help="featurestream: streaming features from Kafka into Redis, Feast-compatible serving, "
    "point-in-time training sets.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(services.app, name="services")
materialize_app.command("batch")(materialize_batch)
app.add_typer(materialize_app, name="materialize")
app.command("replay")(replay_command)
app.command("rebuild")(rebuild_command)
app.command()(generate)
app.command()(apply)
app.command()(show)
app.command()(demo)
app.command("export")(export_command)
app.command()(serve)
