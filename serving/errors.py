"""Errors a request can cause, each with its HTTP status; the app turns them into `{"detail": ...}`."""

from __future__ import annotations


class ServingError(Exception):
    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ServingError):
    """An unknown feature, feature view or feature service (the message names it)."""

    status = 404


class Invalid(ServingError):
    """A malformed body, a missing entity key or request field (the message names the field)."""

    status = 422


class TooManyEntities(ServingError):
    status = 413


class Unauthorized(ServingError):
    status = 401


class Unavailable(ServingError):
    """Redis did not answer in time; the next request tries again."""

    status = 503
