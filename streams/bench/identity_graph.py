"""Measure IdentityGraph.link rates and memory per identifier (not a test; numbers for docs/identity.md).

Run: ``.venv/bin/python -m streams.bench.identity_graph``
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from streams.domain.events import Event
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import IdentityGraph, IdentityRules

PERSONS = 250_000  # four identifiers each: one million identifiers


def rate(label: str, fn: Callable[[Any], object], items: Sequence[Any]) -> None:
    gc.collect()
    start = time.perf_counter()
    for item in items:
        fn(item)
    elapsed = time.perf_counter() - start
    print(f"{label:58s} {len(items) / elapsed:>10,.0f} /s  ({elapsed / len(items) * 1e6:.2f} µs)")


def person(i: int) -> list[Identifier]:
    return [
        Identifier(IdKind.CUSTOMER_ID, f"C{i:09d}"),
        Identifier(IdKind.EMAIL, f"user{i}@example-shop.com"),
        Identifier(IdKind.ANONYMOUS_ID, f"{i:08x}-9c1f-4b5e-8a1d-3f0c2b7e{i % 65536:04x}"),
        Identifier(IdKind.DEVICE_ID, f"{i:016x}"),
    ]


def main() -> None:
    events = [person(i) for i in range(PERSONS)]
    graph = IdentityGraph()
    start = time.perf_counter()
    for i, ids in enumerate(events):
        graph.link(ids, i)
    elapsed = time.perf_counter() - start
    built = f"built {len(graph):,} identifiers / {graph.person_count:,} persons"
    print(f"{built}: {PERSONS / elapsed:,.0f} new 4-identifier events/s")
    start = time.perf_counter()
    changes = graph.drain_changes()
    print(f"drain_changes of {len(changes.identifiers) + len(changes.persons):,} records: "
          f"{time.perf_counter() - start:.2f} s")  # fmt: skip
    owner, persons = graph.records()
    start = time.perf_counter()
    IdentityGraph.from_records(owner, persons)
    print(f"from_records of {len(owner):,} identifiers: {time.perf_counter() - start:.2f} s")
    del graph, changes, owner, persons

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    graph = IdentityGraph()
    for i, ids in enumerate(events):
        graph.link(ids, i)
    graph.drain_changes()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(f"memory (tracemalloc, key strings included): {used / len(graph):.0f} B/identifier, "
          f"{used / len(graph):.0f} MB per million identifiers")  # fmt: skip

    singles = [[ids[i % 4]] for i, ids in enumerate(events[:200_000])]
    rate("link: one known identifier", lambda ids: graph.link(ids, 1), singles)
    rate("link: three identifiers, all known in one person", lambda ids: graph.link(ids, 1),
         [ids[:3] for ids in events[:200_000]])  # fmt: skip
    fresh = [[Identifier(IdKind.ANONYMOUS_ID, f"new-{i}")] for i in range(200_000)]
    rate("link: one unknown identifier (new person)", lambda ids: graph.link(ids, 2), fresh)
    attach = [[events[i][0], Identifier(IdKind.ANONYMOUS_ID, f"more-{i}")] for i in range(200_000)]
    rate("link: known customer + new anonymous id (attach)", lambda ids: graph.link(ids, 3), attach)
    merges = [[events[i][0], fresh[i][0]] for i in range(100_000)]
    rate("link: customer + another person's anonymous id (merge)", lambda ids: graph.link(ids, 4), merges)

    rules = IdentityRules()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sample = [
        Event.from_segment(
            {"type": "track", "event": "Viewed", "messageId": f"m{i}", "userId": f"C{i}",
             "anonymousId": f"a{i}",
             "identifiers": {"email": f" User{i}@Shop.com", "phone": f"07911 {i % 1000000:06d}"}},
            channel="web", source="s", received_at=now,
        )
        for i in range(50_000)
    ]  # fmt: skip
    rate("extract: userId + anonymousId + email + phone (new phones)", rules.extract, sample)


if __name__ == "__main__":
    main()
