"""State keys formatted once per entity, across micro-batches: most entities of a batch were in the last ones."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, lru_cache, partial
from typing import Any

from featurestream.definitions import StreamViewSpec
from featurestream.online.keys import state_key

KEY_CACHE_SIZE = 1 << 18


def cached_state_keys(project: str, view: StreamViewSpec) -> Callable[[tuple[Any, ...]], str]:
    """entity tuple -> the view's state key, from a bounded cache (memory stays flat however many entities).

    Each micro-batch builds its view batches anew; they share the view's one cache.
    """
    return _view_cache(project, view.name, tuple(view.join_keys))


@cache
def _view_cache(project: str, view: str, join_keys: tuple[str, ...]) -> Callable[[tuple[Any, ...]], str]:
    return lru_cache(maxsize=KEY_CACHE_SIZE)(partial(state_key, project, view, join_keys))
