"""Generated shoppers and their events for benchmarks, tests and the development stack: the 50
segment definitions of the pipeline benchmark, known shoppers on every channel with a realistic mix of
event names, and identity workloads where some events bring a never-seen identifier."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from streams.domain.events import Event
from streams.domain.identifiers import Identifier, IdKind
from streams.settings import CHANNELS

CATEGORIES = ("shoes", "apparel", "beauty", "home")


EVENT_NAMES = ("Product Viewed",) * 14 + ("Product Added",) * 3 + ("Order Completed", "page", "Email Opened")


def bench_definitions() -> str:
    """50 definitions of the kinds real shops run (behaviour, product, context, derived, refs)."""
    docs: list[str] = []
    for i, category in enumerate(CATEGORIES):
        docs += [
            f"- id: viewed-{category}-7d\n  when: {{event: Product Viewed, "
            f"product: {{category: {category}}}, window: 7d, count: {{gte: 2}}}}",
            f"- id: bought-{category}-90d\n  when: {{event: Order Completed, "
            f"product: {{category: {category}}}, window: 90d}}",
            f"- id: browsed-not-bought-{category}\n  when: {{all: [{{segment: viewed-{category}-7d}}, "
            f"{{not: {{segment: bought-{category}-90d}}}}]}}",
            f"- id: added-{category}-1d\n  when: {{event: Product Added, product: {{category: {category}}}, "
            f"window: 1d}}",
            f"- id: spend-{category}-365d\n  when: {{event: Order Completed, "
            f"product: {{category: {category}}}, window: 365d, sum: {{of: revenue, gte: {50 + 25 * i}}}}}",
        ]
    for channel in CHANNELS:
        docs += [
            f"- id: active-{channel}-1d\n  when: {{event: [Product Viewed, page], channel: {channel}, "
            "window: 1d}",
            f"- id: prefers-{channel}\n  when: {{derived: preferred_channel, eq: {channel}}}",
        ]
    docs += [
        "- id: mobile-evening\n  when: {event: [Product Viewed, page], device_type: mobile, "
        "local_hour: {between: [18, 23]}, window: 14d, count: {gte: 3}}",
        "- id: new-customer\n  when: {event: Order Completed, first: {within: 30d}}",
        "- id: returning\n  when: {event: Order Completed, count: {gte: 2}}",
        "- id: lapsed\n  when: {all: [{derived: lapse_ratio, gt: 1.5}, {derived: purchase_count, gte: 2}]}",
        "- id: high-value\n  when: {event: Order Completed, window: 365d, sum: {of: revenue, gte: 300}}",
        "- id: gold\n  when: {trait: tier, in: [gold, platinum]}",
        "- id: engaged-email\n  when: {event: Email Opened, window: 30d, count: {gte: 2}}",
        "- id: no-purchase-30d\n  when: {all: [{event: Order Completed}, "
        "{not: {event: Order Completed, window: 30d}}]}",
        "- id: cart-abandoner\n  when: {all: [{event: Product Added, window: 1d}, "
        "{not: {event: Order Completed, window: 1d}}]}",
        "- id: heavy-viewer\n  when: {event: Product Viewed, window: 1d, count: {gte: 10}}",
        "- id: big-basket\n  when: {event: Order Completed, window: 90d, max: {of: revenue, gte: 150}}",
        "- id: winter-shopper\n  when: {event: Order Completed, season: winter, window: 365d}",
        "- id: weekend-browser\n  when: {event: Product Viewed, weekday: [sat, sun], window: 14d}",
        "- id: vip\n  when: {any: [{segment: gold}, {segment: high-value}]}",
        "- id: store-and-web\n  when: {all: [{segment: active-store-1d}, {segment: active-web-1d}]}",
        "- id: probe\n  personalised: false\n  when: {event: Bench Probe, window: 10m}",
        "- id: already-purchased\n  kind: suppression\n  per: product",
        "- id: already-purchased-category\n  kind: suppression\n  per: category\n  returns_exit: false",
        "- id: likes-shoes\n  when: {derived: preferred_category, eq: shoes}",
        "- id: long-time\n  when: {derived: days_since_first_seen, gte: 365}",
        "- id: repeat-interval-short\n  when: {derived: purchase_interval_days, lt: 14}",
        "- id: recent-buyer-7d\n  when: {event: Order Completed, window: 7d}",
    ]
    assert len(docs) == 50, len(docs)
    return "\n".join(docs) + "\n"


def event_data(k: int, i: int, rng: random.Random, name: str) -> dict[str, Any]:
    ids = shopper_identifiers(i)
    channel = CHANNELS[k % 4]
    now = datetime.now(UTC)
    category = CATEGORIES[k % 4]
    data: dict[str, Any] = {
        "messageId": f"bench-{k}",
        "type": "track",
        "event": name,
        "context": {
            "channel": channel,
            "userAgent": "Mozilla/5.0 (Linux; Android 14) Mobile",
            "ip": "10.0.0.1",
        },
        "properties": {"sku": f"SKU-{k % 500}", "price": 12.5 + k % 90, "category": category},
        "timestamp": now,
        "receivedAt": now,
    }
    if name == "page":
        data["type"], data["event"], data["properties"] = "page", None, {"path": "/"}
    if name == "Order Completed":
        data["lines"] = [{"sku": f"SKU-{k % 500}", "quantity": 1, "unitPrice": 12.5 + k % 90}]
    if channel == "email":
        data["identifiers"] = {"email": ids[1].value}
    elif channel == "app":
        data["userId"] = ids[0].value
        data["context"]["device"] = {"id": ids[3].value, "type": "android"}
    else:
        data["userId"] = ids[0].value
        data["anonymousId"] = ids[2].value
    return data


def shopper_events(n: int, persons: int, rng: random.Random, start: int) -> list[Event]:
    """Known shoppers (fast path) on every channel with a realistic mix of event names."""
    return [
        Event.model_validate(event_data(k, rng.randrange(persons), rng, rng.choice(EVENT_NAMES)))
        for k in range(start, start + n)
    ]


def shopper_identifiers(i: int) -> list[Identifier]:
    return [
        Identifier(IdKind.CUSTOMER_ID, f"C{i:09d}"),
        Identifier(IdKind.EMAIL, f"user{i}@example-shop.co.uk"),
        Identifier(IdKind.ANONYMOUS_ID, f"{i:08x}-9c1f-4b5e-8a1d-3f0c2b7e0000"),
        Identifier(IdKind.DEVICE_ID, f"{i:016x}"),
    ]


def identity_events(n: int, persons: int, link_ratio: float, rng: random.Random, start: int) -> list[Event]:
    """Mostly known shoppers on every channel; ``link_ratio`` of them bring a never-seen cookie."""
    out = []
    now = datetime.now(UTC)
    for k in range(start, start + n):
        i = rng.randrange(persons)
        ids = shopper_identifiers(i)
        channel = CHANNELS[k % 4]
        data: dict[str, Any] = {
            "messageId": f"bench-{k}",
            "type": "track",
            "event": "Product Viewed",
            "context": {"channel": channel, "userAgent": "Mozilla/5.0 (X11; Linux x86_64)", "ip": "10.0.0.1"},
            "properties": {"sku": f"SKU-{k % 500}", "price": 12.5},
            "timestamp": now,
            "receivedAt": now,
        }
        if rng.random() < link_ratio:
            data["userId"] = ids[0].value
            data["anonymousId"] = f"new-{k:012x}"
        elif channel == "email":
            data["identifiers"] = {"email": ids[1].value}
        elif channel == "app":
            data["userId"] = ids[0].value
            data["context"]["device"] = {"id": ids[3].value}
        else:
            data["userId"] = ids[0].value
            data["anonymousId"] = ids[2].value
        out.append(Event.model_validate(data))
    return out
