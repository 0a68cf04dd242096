"""Derived person traits (recency, frequency, lapse, preferred channel/hour/category/brand): their
values and, for those that move with the clock, the moments they cross a threshold."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

from streams.domain.segments.model import DAY_MS
from streams.domain.segments.profile import Profile

# The earliest moment after ``now`` at which a condition may change with the clock alone (None: never).
Deadline = Callable[[Profile, int], int | None]


def argmax(counts: Mapping[str, int]) -> str | None:
    """The most frequent key (ties: the smallest); None when there is none."""
    found: str | None = None
    best = 0
    for key, value in counts.items():
        if found is None or value > best or (value == best and key < found):
            found, best = key, value
    return found


def bump_count(counts: dict[str, int], key: str) -> bool:
    """Count one more ``key``; whether the most frequent key (ties: the smallest) changed."""
    if not counts:
        counts[key] = 1
        return True
    mine = counts.get(key, 0) + 1
    best = max(counts.values())  # before counting: ``key`` had at most ``best``
    counts[key] = mine
    if mine < best:  # the leader still counts more than ``key``: it stays the leader
        return False
    # mine == best + 1: ``key`` led before (tied or alone) and leads now; it changed if a smaller key
    # led before. mine == best: ``key`` ties with the leaders; it changed unless a smaller key leads.
    for name, value in counts.items():
        if value == best and name < key:
            return mine > best
    return mine == best


def purchase_interval_days(purchases: list[int]) -> float | None:
    """The median gap between consecutive kept purchases, in days (None below two purchases)."""
    if len(purchases) < 2:
        return None
    gaps = sorted(b - a for a, b in itertools.pairwise(purchases))
    middle = len(gaps) // 2
    median = gaps[middle] if len(gaps) % 2 else (gaps[middle - 1] + gaps[middle]) / 2
    return median / DAY_MS


def derived_value(profile: Profile, name: str, now: int) -> Any:
    """The derived trait ``name`` of ``profile`` at ``now`` (None when it is not defined yet)."""
    if name == "days_since_last_purchase":
        return (now - profile.purchases[-1]) / DAY_MS if profile.purchases else None
    if name == "days_since_first_seen":
        return (now - profile.first_seen) / DAY_MS if profile.first_seen is not None else None
    if name == "purchase_count":
        return profile.purchase_count
    if name == "lifetime_revenue":
        return profile.revenue
    if name == "purchase_interval_days":
        return purchase_interval_days(profile.purchases)
    if name == "lapse_ratio":
        interval = purchase_interval_days(profile.purchases)
        if not interval or not profile.purchases:
            return None
        return ((now - profile.purchases[-1]) / DAY_MS) / interval
    if name == "preferred_channel":
        return argmax(profile.channel_counts)
    if name == "preferred_hour":
        hour = argmax(profile.hour_counts)  # keys are zero-padded, so ties go to the earliest hour
        return int(hour) if hour is not None else None
    if name == "preferred_category":
        return argmax(profile.category_counts)
    if name == "preferred_brand":
        return argmax(profile.brand_counts)
    raise ValueError(f"unknown derived trait {name!r}")


def deriver(name: str) -> Callable[[Profile, int], Any]:
    """``derived_value`` for one name."""
    if name == "preferred_channel":
        return lambda profile, now: argmax(profile.channel_counts)
    if name == "preferred_category":
        return lambda profile, now: argmax(profile.category_counts)
    if name == "preferred_brand":
        return lambda profile, now: argmax(profile.brand_counts)
    if name == "purchase_count":
        return lambda profile, now: profile.purchase_count
    if name == "lifetime_revenue":
        return lambda profile, now: profile.revenue
    return lambda profile, now: derived_value(profile, name, now)


def reaching(threshold: float, interval: float | None = None) -> int:
    """The first whole ms ``o`` after the start at which the derived value reaches ``threshold``,
    computed the way :func:`derived_value` does: ``o / DAY_MS`` days, or ``(o / DAY_MS) / interval``
    for a lapse ratio.

    ``ceil(threshold * DAY_MS * interval)`` alone can be 1 ms off: the product rounds differently from
    the divisions of the evaluation (seen: a lapse ratio of 0.5 over a 4,050,500 ms gap fired late).
    """

    def value(o: int) -> float:
        return o / DAY_MS if interval is None else (o / DAY_MS) / interval

    o = max(0, math.ceil(threshold * DAY_MS * (1.0 if interval is None else interval)))
    while o > 0 and value(o - 1) >= threshold:
        o -= 1
    while value(o) < threshold:
        o += 1
    return o


def derived_deadlines(name: str, thresholds: list[float]) -> Deadline:
    # in days: the moments after the start at which the value reaches each threshold
    days = [reaching(threshold) for threshold in thresholds]

    def earliest(start: int, offsets: list[int], now: int) -> int | None:
        best: int | None = None
        for offset in offsets:
            at = start + offset
            if at <= now:
                at += 1  # the moment after the threshold (a strict comparison turns then)
                if at <= now:
                    continue
            if best is None or at < best:
                best = at
        return best

    if name == "days_since_first_seen":

        def first_seen(profile: Profile, now: int) -> int | None:
            start = profile.first_seen
            return None if start is None else earliest(start, days, now)

        return first_seen
    if name == "days_since_last_purchase":

        def last_purchase(profile: Profile, now: int) -> int | None:
            purchases = profile.purchases
            return earliest(purchases[-1], days, now) if purchases else None

        return last_purchase

    def lapse(profile: Profile, now: int) -> int | None:  # lapse_ratio
        purchases = profile.purchases
        if not purchases:
            return None
        interval = purchase_interval_days(purchases)
        if not interval:
            return None
        return earliest(purchases[-1], [reaching(threshold, interval) for threshold in thresholds], now)

    return lapse
