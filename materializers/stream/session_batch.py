"""One micro-batch of a session view: each entity's sessions updated (in Rust), fenced by offsets.

Session merges (an out-of-order event filling a gap) need the whole state, which
the native `SessionFold` updates (`featurestream.windows.sessions` documents it);
the sink reads it or takes it from its cache and writes it back by compare-and-set
(see `state_batch`).
"""

from __future__ import annotations

from featurestream_native import EntityEvents, SessionFold

from featurestream.definitions import StreamViewSpec
from featurestream.windows import sessions
from materializers.stream.state_batch import EXPIRY_MARGIN_MS, Entity, StateBatch

# Sessions are pruned this far behind the newest one: partitions feeding one entity may lag each other.
PRUNE_SLACK_MS = 86_400_000


class SessionBatch(StateBatch):
    def __init__(self, project: str, view: StreamViewSpec, events: EntityEvents | None = None) -> None:
        assert view.session_gap_ms is not None
        super().__init__(project, view, events)
        self.gap_ms = view.session_gap_ms
        self._fold = SessionFold([(a.name, a.function, a.column) for a in view.aggregations], self.gap_ms,
                                 sessions.absorb)
        self.expiry_ms = max(self.gap_ms + view.source.lateness_ms + PRUNE_SLACK_MS, view.ttl_ms or 0) \
            + EXPIRY_MARGIN_MS

    @staticmethod
    def columns(view: StreamViewSpec) -> list[str]:
        return list(dict.fromkeys(a.column for a in view.aggregations))

    def decode(self, blob: bytes | None) -> sessions.SessionState:
        return sessions.decode(blob) if blob else []

    def update(self, entity: Entity, state: sessions.SessionState, applied: dict[int, int]) \
            -> tuple[bytes, dict[int, int]] | None:
        offsets = self._fold.fold(state, self.events, entity, applied)
        if offsets is None:
            return None
        newest = state[-1][sessions.LAST]
        sessions.prune(state, newest - self.view.source.lateness_ms - PRUNE_SLACK_MS, self.gap_ms)
        return sessions.encode(state), offsets
