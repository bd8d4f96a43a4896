"""The `featurestream` command line."""

from featurestream.cli.app import app

__all__ = ["app"]
