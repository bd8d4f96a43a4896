"""Request bodies, decoded and checked with msgspec: a malformed body is a 422 naming the field."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from serving.errors import Invalid, TooManyEntities

Columns = dict[str, list[Any]]
Body = dict[str, Any]  # checked by `columns`, so errors name the key rather than `$.entities[...]`
_LATEST_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant datetime can print
_INTEGER_BITS = {"INT64": 63, "UNIX_TIMESTAMP": 63, "INT32": 31}


class OnlineFeaturesRequest(msgspec.Struct, kw_only=True):
    """Feast's feature server request, plus optional `request_time` (replay) and `request_data`."""

    entities: Body
    features: list[str] | None = None
    feature_service: str | None = None
    full_feature_names: bool = False
    request_time: int | str | None = None  # epoch ms or ISO 8601; default now
    request_data: Body | None = None  # request-time inputs; Feast passes them inside `entities`, as we also accept
    include_feature_view_version_metadata: bool = False  # sent by Feast's remote client; nothing to report


class PredictRequest(msgspec.Struct, kw_only=True):
    feature_service: str
    entities: Body
    request_data: Body | None = None
    request_time: int | str | None = None
    return_features: bool = False
    full_feature_names: bool = False


def decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Invalid(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Invalid(f"request body is not valid JSON: {exc}") from None


def request_time_ms(value: int | str | None, now_ms: int) -> tuple[int, bool]:
    """(t in epoch ms, whether the caller chose it)."""
    if value is None:
        return now_ms, False
    if isinstance(value, int):
        t_ms = value
    else:
        try:
            stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            t_ms = int((stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp() * 1000)
        except (ValueError, OverflowError):
            raise Invalid(f"request_time: {value!r} is neither epoch milliseconds nor ISO 8601") from None
    if not 0 <= t_ms <= _LATEST_MS:
        raise Invalid(f"request_time: {value!r} is outside 1970-01-01 to 9999-12-31")
    return t_ms, True


def columns(entities: Body, request_data: Body | None, max_rows: int) -> tuple[Columns, int]:
    """Entities and request data as one set of equally long columns, and their row count."""
    merged: Columns = {}
    for part, given in (("entities", entities), ("request_data", request_data or {})):
        for name, values in given.items():
            if not isinstance(values, list):
                raise Invalid(f"{part}.{name}: expected a list of values, got {type(values).__name__}")
            if name in merged:
                raise Invalid(f"{part}.{name}: given twice")
            merged[name] = values
    if not merged:
        raise Invalid("entities: at least one entity key is required")
    lengths = {name: len(values) for name, values in merged.items()}
    rows = max(lengths.values())
    if rows > max_rows:
        raise TooManyEntities(f"entities: {rows} rows is more than the limit of {max_rows}")
    uneven = [name for name, n in lengths.items() if n != rows]
    if uneven:
        raise Invalid(f"entities.{uneven[0]}: {lengths[uneven[0]]} values where other columns have {rows}")
    if rows == 0:
        raise Invalid("entities: no rows")
    return merged, rows


def check_keys(cols: Columns, join_keys: tuple[str, ...], key_types: dict[str, str]) -> None:
    """Every join key the plan reads is there, with values of its entity's type."""
    for key in join_keys:
        values = cols.get(key)
        if values is None:
            raise Invalid(f"entities.{key}: missing; the requested features are keyed by it")
        kind = key_types.get(key)
        valid = _validator(kind)
        if not all(map(valid, values)):
            index = next(i for i, value in enumerate(values) if not valid(value))
            raise Invalid(f"entities.{key}[{index}]: {values[index]!r} is not a valid {kind or 'key'} value")


@functools.cache
def _validator(kind: str | None) -> Callable[[Any], bool]:
    """Whether a JSON value is a valid value of an entity type."""
    bits = _INTEGER_BITS.get(kind or "")
    if bits:
        low, high = -(2**bits), 2**bits
        return lambda value: type(value) is int and low <= value < high
    if kind == "STRING":
        return lambda value: type(value) is str
    return lambda value: isinstance(value, int | str | float | bool)


def check_request_fields(cols: Columns, fields: tuple[str, ...]) -> None:
    for name in fields:
        if name not in cols:
            raise Invalid(f"request_data.{name}: missing; an on demand feature view needs it (pass it in entities)")
