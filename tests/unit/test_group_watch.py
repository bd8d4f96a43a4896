"""The watchdog's rule: recreate a consumer out of its group too long, never an idle member of a steady group."""

from __future__ import annotations

import orjson

from materializers.stream.group_watch import GroupWatch


def _stats(state: str | None, join_state: str = "steady", assigned: int = 0) -> bytes:
    body: dict[str, object] = {"type": "consumer"}
    if state is not None:
        body["cgrp"] = {"state": state, "join_state": join_state, "assignment_size": assigned}
    return orjson.dumps(body)


def test_an_idle_member_of_a_steady_group_is_never_wedged() -> None:
    watch = GroupWatch(patience_s=10)
    for second in range(600):
        watch.observe(_stats("up", "steady", assigned=0), float(second))
    assert not watch.wedged(600.0)


def test_a_member_waiting_for_its_topic_is_not_wedged() -> None:
    watch = GroupWatch(patience_s=10)
    for second in range(100):
        watch.observe(_stats("up", "wait-metadata" if second % 2 else "init"), float(second))
    assert not watch.wedged(100.0)


def test_a_consumer_without_coordinator_is_wedged_after_the_patience_only() -> None:
    watch = GroupWatch(patience_s=10)
    watch.observe(_stats("up", assigned=3), 0.0)
    for second, state in enumerate(["wait-coord", "query-coord", "wait-coord", "query-coord"], start=1):
        watch.observe(_stats(state, "init"), float(second))
    assert not watch.wedged(10.5)  # away since second 1
    assert watch.wedged(11.0)
    assert watch.state == "query-coord"
    assert watch.away_s(12.0) == 11.0


def test_rejoining_resets_the_clock() -> None:
    watch = GroupWatch(patience_s=10)
    watch.observe(_stats("wait-coord"), 0.0)
    watch.observe(_stats("up"), 8.0)
    watch.observe(_stats("query-coord"), 9.0)
    assert not watch.wedged(18.0)
    assert watch.wedged(19.0)


def test_statistics_without_a_group_change_nothing() -> None:
    watch = GroupWatch(patience_s=10)
    watch.observe(_stats("wait-coord"), 0.0)
    watch.observe(_stats(None), 5.0)
    assert watch.wedged(10.0)
