"""Clicks as shoppers make them: sessions of a view → click → add_to_cart → purchase funnel, at a bursty rate.

Everything is vectorized over events; loops run over days, bursts or retries only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
_FUNNEL = np.array([0.30, 0.30, 0.45])     # P(click | view), P(add_to_cart | click), P(purchase | add_to_cart)
_EVENTS_PER_INTERACTION = 1 + np.cumprod(_FUNNEL).sum()
_INTENT_SIGMA = 0.8                        # spread of per-session purchase intent (lognormal, mean 1)
_GAP_MEDIAN_MS, _GAP_SIGMA = 20_000, 0.9   # between a session's events: seconds to a few minutes
_GAP_MIN_MS, _GAP_MAX_MS = 1_000, 240_000
_SESSION_GAP_MIN_MS = 45 * 60_000          # well over the 30 min gap of the user_session view
_SESSION_GAP_EXTRA_MS = 20 * 60_000        # mean extra idle time when sessions of one user would collide
_SESSIONS_PER_USER_DAY = 4.0
_BURST_EVERY_HOURS = 6.0
_OVERSAMPLE, _OVERSAMPLE_GROWTH, _ATTEMPTS = 1.3, 1.6, 6


@dataclass(frozen=True)
class Clicks:
    """Good events in event-time order."""

    ts_ms: np.ndarray        # int64 epoch ms, ascending
    user_id: np.ndarray      # int64
    item_id: np.ndarray      # int64
    event_type: np.ndarray   # int8 index into EVENT_TYPES


@dataclass(frozen=True)
class _Sessions:
    """Candidate events grouped by session, each with its offset from the session's first event."""

    session: np.ndarray      # per event
    offset_ms: np.ndarray    # per event, ascending within a session
    item_id: np.ndarray
    event_type: np.ndarray
    duration_ms: np.ndarray  # per session


def generate_clicks(rng: np.random.Generator, n: int, start_ms: int, end_ms: int,
                    user_weight: np.ndarray, item_weight: np.ndarray) -> Clicks:
    """Exactly n events in [start_ms, end_ms): whole sessions, plus a prefix of one, so every funnel stays causal."""
    users = len(user_weight)
    span_ms = end_ms - start_ms
    sessions_per_user = max(1.0, _SESSIONS_PER_USER_DAY * span_ms / 86_400_000)
    # Heavy traffic over few users makes longer sessions rather than implausibly many of them.
    interactions = max(3.0, n / (users * sessions_per_user * _EVENTS_PER_INTERACTION))
    mean_events = interactions * _EVENTS_PER_INTERACTION
    mean_session_ms = (mean_events - 1) * 1.3 * _GAP_MEDIAN_MS
    capacity = max(1.0, 0.5 * span_ms / (_SESSION_GAP_MIN_MS + _SESSION_GAP_EXTRA_MS + mean_session_ms))
    factor = _OVERSAMPLE
    for _ in range(_ATTEMPTS):
        n_sessions = max(1, int(np.ceil(n * factor / mean_events)))
        sessions = _draw_sessions(rng, n_sessions, interactions, item_weight)
        shares = _cap_shares(user_weight, capacity / n_sessions)
        user_id = rng.choice(users, size=n_sessions, p=shares) + 1
        start = _place_sessions(rng, user_id, _session_starts(rng, n_sessions, start_ms, end_ms), sessions.duration_ms)
        ts = start[sessions.session] + sessions.offset_ms
        kept = np.flatnonzero(ts < end_ms)
        if len(kept) >= n:
            priority = rng.permutation(n_sessions)[sessions.session[kept]]
            chosen = kept[np.lexsort((sessions.offset_ms[kept], priority))[:n]]
            chosen = chosen[np.lexsort((chosen, ts[chosen]))]
            return Clicks(ts_ms=ts[chosen], user_id=user_id[sessions.session[chosen]],
                          item_id=sessions.item_id[chosen], event_type=sessions.event_type[chosen])
        factor *= _OVERSAMPLE_GROWTH
    raise ValueError(f"cannot fit {n} events from {users} users into {span_ms / 3_600_000:g} hours with "
                     "sessions 45 minutes apart: use more users or more event hours")


def _draw_sessions(rng: np.random.Generator, n_sessions: int, interactions: float,
                   item_weight: np.ndarray) -> _Sessions:
    """Each session looks at a few items; each look goes some way down the funnel, later steps interleaved with other looks."""
    per_session = np.minimum(rng.geometric(1 / interactions, n_sessions), int(10 * interactions))
    inter_session = np.repeat(np.arange(n_sessions), per_session)
    inter_rank = _rank_in_group(per_session)
    inter_item = rng.choice(len(item_weight), size=len(inter_session), p=item_weight) + 1
    # Shoppers on a mission click, add and buy more in that session: what makes purchases predictable
    # from in-session activity, as in real clickstreams. Mean intent 1 keeps the average funnel.
    intent = rng.lognormal(-_INTENT_SIGMA**2 / 2, _INTENT_SIGMA, n_sessions)[inter_session]
    step_p = np.minimum(_FUNNEL * intent[:, None], 0.95)
    steps = 1 + np.cumprod(rng.random((len(inter_session), 3)) < step_p, axis=1).sum(axis=1)
    interaction = np.repeat(np.arange(len(inter_session)), steps)
    stage = _rank_in_group(steps)
    # A later funnel step may come after looking at the next items; steps of one look stay in order.
    step_delay = np.where(stage == 0, 0.0, rng.uniform(0.3, 1.2, len(stage)))
    delay = np.cumsum(step_delay)
    delay -= np.repeat(delay[np.cumsum(steps) - steps], steps)
    session = inter_session[interaction]
    order = np.lexsort((delay + inter_rank[interaction], session))
    session, interaction, stage = session[order], interaction[order], stage[order]
    first = np.r_[True, session[1:] != session[:-1]]
    gap = np.clip(rng.lognormal(np.log(_GAP_MEDIAN_MS), _GAP_SIGMA, len(session)), _GAP_MIN_MS, _GAP_MAX_MS)
    gap = np.where(first, 0, gap.astype(np.int64))
    offset = _cumsum_in_group(gap, first)
    last = np.r_[first[1:], True]
    duration = np.zeros(n_sessions, dtype=np.int64)
    duration[session[last]] = offset[last]
    return _Sessions(session=session, offset_ms=offset, item_id=inter_item[interaction],
                     event_type=stage.astype(np.int8), duration_ms=duration)


def _session_starts(rng: np.random.Generator, n: int, start_ms: int, end_ms: int) -> np.ndarray:
    """Start times from a daily cycle (evening peak) with a few bursts of several times the usual rate."""
    span_ms = end_ms - start_ms
    bins = max(1, span_ms // 60_000)
    width = span_ms / bins
    hour = ((start_ms + (np.arange(bins) + 0.5) * width) / 3_600_000) % 24
    rate = 1.0 + 0.6 * np.cos(2 * np.pi * (hour - 20) / 24)
    bursts = max(1, round(span_ms / 3_600_000 / _BURST_EVERY_HOURS))
    for first, length, boost in zip(rng.integers(0, bins, bursts), rng.integers(10, 61, bursts),
                                    rng.uniform(3, 8, bursts), strict=True):
        rate[first:first + length] *= boost
    chosen = rng.choice(bins, size=n, p=rate / rate.sum())
    return np.minimum(start_ms + ((chosen + rng.random(n)) * width).astype(np.int64), end_ms - 1)


def _place_sessions(rng: np.random.Generator, user_id: np.ndarray, start: np.ndarray,
                    duration: np.ndarray) -> np.ndarray:
    """Push a user's sessions later until each starts well over 30 minutes after the previous one ended."""
    order = np.lexsort((start, user_id))
    user, begin = user_id[order], start[order]
    first = np.r_[True, user[1:] != user[:-1]]
    idle = _SESSION_GAP_MIN_MS + rng.exponential(_SESSION_GAP_EXTRA_MS, len(order)).astype(np.int64)
    need = np.where(first, 0, np.r_[0, (duration[order] + idle)[:-1]])
    pushed = _cumsum_in_group(need, first)
    # placed[i] = max(begin[i], placed[i-1] + need[i]) = pushed[i] + the group's running max of (begin - pushed);
    # offsetting each group above the previous one lets one global running max stay inside groups.
    slack = begin - pushed
    low = slack.min()
    group = np.cumsum(first) - 1
    height = slack.max() - low + 1
    running = np.maximum.accumulate(slack - low + group * height) - group * height + low
    placed = np.empty_like(start)
    placed[order] = running + pushed
    return placed


def _cap_shares(weights: np.ndarray, cap: float) -> np.ndarray:
    """Water-fill: keep the skew but give nobody more than `cap` of the sessions (a person only shops so often)."""
    if cap * len(weights) <= 1:
        return np.full(len(weights), 1 / len(weights))
    shares = weights.copy()
    while (over := shares > cap).any():
        excess = (shares[over] - cap).sum()
        shares[over] = cap
        free = shares < cap
        shares[free] += excess * shares[free] / shares[free].sum()
    return shares / shares.sum()


def _rank_in_group(sizes: np.ndarray) -> np.ndarray:
    """0, 1, .. within each consecutive group of the given sizes."""
    return np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def _cumsum_in_group(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running sum restarting where `first` is set (values at group starts are included)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(first)
    return total - np.repeat(total[starts] - values[starts], np.diff(np.r_[starts, len(values)]))
