"""What every command shares: settings, the console, and turning our errors into a sentence and an exit code."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from featurestream.config import ConfigError, Settings, load_settings
from featurestream.definitions import DefinitionError
from featurestream.online.keys import OldLayoutError
from featurestream.services import ServiceError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")

# Errors whose message is the whole story for the user: no traceback.
USER_ERRORS = (ConfigError, DefinitionError, ServiceError, FileNotFoundError, OldLayoutError)


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def friendly_errors(func: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise fail(str(exc)) from None

    return wrapper


def settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise fail(str(exc)) from None
