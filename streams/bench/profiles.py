"""Segment profiles in memory: how fast the engine builds them and how much RSS they take."""

from __future__ import annotations

import random
import time
from typing import Any

from streams.bench.measure import (
    Report,
    rss_bytes,
)
from streams.dev.workload import (
    CATEGORIES,
    EVENT_NAMES,
    bench_definitions,
)
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.profile import Profile
from streams.settings import CHANNELS


def measure_profiles(persons: int, events_per_person: int, report: Report) -> dict[str, Any]:
    """RSS growth of ``persons`` profiles built by the engine with the 50 definitions."""
    engine = SegmentEngine([(d, 1) for d in load_definitions([("bench", bench_definitions())])])
    rng = random.Random(7)
    now = int(time.time() * 1000)
    before = rss_bytes()
    profiles: dict[str, Profile] = {}
    started = time.monotonic()
    applied = 0
    for i in range(persons):
        profile = profiles[f"p{i}"] = Profile(f"p{i}")
        for j in range(events_per_person):
            name = rng.choice(EVENT_NAMES)
            lines = (LineItem(sku=f"SKU-{(i + j) % 500}", quantity=1, unit_price=40.0),)
            event = SegmentEvent(
                f"m{i}-{j}",
                now - rng.randrange(30 * 86_400_000),
                name,
                CHANNELS[j % 4],
                device_type="android" if j % 2 else None,
                properties={"category": CATEGORIES[j % 4], "sku": f"SKU-{(i + j) % 500}"},
                lines=lines if name == "Order Completed" else (),
                identifiers=(f"email:user{i}@example.com", f"customer_id:C{i}"),
            )
            engine.apply(profile, event, now)
            applied += 1
    elapsed = time.monotonic() - started
    grown = rss_bytes() - before
    report(
        f"profiles: {persons:,} persons x {events_per_person} events in {elapsed:.1f}s "
        f"({applied / elapsed:,.0f} engine applies/s), RSS +{grown / 1e6:.0f} MB"
    )
    return {
        "profile_persons": persons,
        "profile_events_per_person": events_per_person,
        "engine_applies_per_s_single_thread": round(applied / elapsed),
        "profile_rss_bytes_per_million_profiles": round(grown / persons * 1e6),
    }
