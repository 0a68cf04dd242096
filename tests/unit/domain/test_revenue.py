"""One revenue definition (streams/domain/revenue.py): its rules, and the segment engine and the identity
sink's event_persons column giving the same figures for the same resolved events."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.domain.events import Event
from streams.domain.revenue import event_value, signed_revenue
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.profile import Profile
from streams.sinks.identity_tables import IdentityBatch
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import event_body, resolved_event
from streams.wire.row_decoder import ResolvedDecoder
from streams.wire.segments import decode_resolved

LINES = [(2.0, 12.5), (1.0, None), (3.0, 1.0)]  # 25 + nothing + 3


@pytest.mark.parametrize(
    ("properties", "lines", "value"),
    [
        ({"revenue": 42.0}, [], 42.0),  # the Segment e-commerce field alone
        ({"revenue": 42}, LINES, 42.0),  # stated beats lines
        ({"total": 50.5}, LINES, 50.5),
        ({"revenue": 40.0, "total": 50.0}, [], 40.0),  # revenue before total
        ({"revenue": "40.00", "total": 45.0}, [], 45.0),  # text is not a number
        ({"revenue": True}, LINES, 28.0),
        ({"revenue": None, "total": None}, LINES, 28.0),
        ({"revenue": math.nan}, LINES, 28.0),
        ({}, LINES, 28.0),
        ({}, [(math.inf, 2.0), (1.0, math.nan), (1.0, 4.0)], 4.0),
        ({}, [], 0.0),
    ],
)
def test_value_is_stated_revenue_else_total_else_lines(
    properties: dict[str, Any], lines: list[tuple[float, float | None]], value: float
) -> None:
    assert event_value(properties, lines) == value


def test_revenue_is_signed_by_purchase_and_return_and_zero_otherwise() -> None:
    assert signed_revenue("Order Completed", 30.0) == 30.0
    assert signed_revenue("Order Refunded", 30.0) == -30.0
    assert signed_revenue("Product Returned", 12.5) == -12.5
    assert signed_revenue("Checkout Started", 99.0) == 0.0
    assert signed_revenue("", 99.0) == 0.0


T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
PRODUCTS = [{"sku": "SKU-1", "price": 20.0, "quantity": 2}]
# (event name, properties): what shops send, each resolved to the same person.
CALLS: list[tuple[str, dict[str, Any]]] = [
    ("Order Completed", {"order_id": "o1", "revenue": 42.0, "currency": "EUR"}),  # no products
    ("Order Completed", {"order_id": "o2", "total": 55.0, "products": PRODUCTS}),
    ("Order Completed", {"order_id": "o3", "products": PRODUCTS}),
    ("Order Completed", {"order_id": "o4", "revenue": 30.0, "total": 36.0, "products": PRODUCTS}),
    ("Checkout Started", {"order_id": "o5", "products": PRODUCTS}),  # a basket, not revenue
    ("Order Refunded", {"order_id": "o2", "total": 55.0}),
    ("Product Returned", {"order_id": "o3", "products": [{"sku": "SKU-1", "price": 20.0, "quantity": 1}]}),
]
EXPECTED = [42.0, 55.0, 40.0, 30.0, 0.0, -55.0, -20.0]


def resolved_record(number: int, name: str, properties: dict[str, Any]) -> bytes:
    when = T0 + timedelta(minutes=number)
    payload = {
        "type": "track",
        "event": name,
        "messageId": f"m{number}",
        "userId": "cust-1",
        "timestamp": when.isoformat(),
        "properties": properties,
    }
    event = Event.from_segment(payload, channel="web", source="web", received_at=when, call_type="track")
    body = event_body(EVENT_CODEC.encode(event.to_avro()))
    return resolved_event("p1", ["customer_id:cust-1"], int(when.timestamp() * 1000), body)


def test_segment_engine_and_warehouse_count_the_same_revenue() -> None:
    records = [resolved_record(number, name, properties) for number, (name, properties) in enumerate(CALLS)]

    batch = IdentityBatch()
    decoder = ResolvedDecoder()
    for offset, record in enumerate(records):
        batch.add_resolved(decoder.decode(record), 0, offset)
    columns = dict(zip(batch.event_persons.names, batch.event_persons.columns, strict=True))
    assert columns["revenue"] == EXPECTED
    assert columns["currency"][0] == "EUR"  # an order without lines keeps its stated currency

    definitions = load_definitions(
        [
            (
                "t",
                "- id: lifetime-100\n  when: {derived: lifetime_revenue, gte: 100}\n"
                "- id: spent-40\n  when: {event: Order Completed, sum: {of: revenue, gte: 40}}\n",
            )
        ]
    )
    engine = SegmentEngine([(d, 1) for d in definitions], timezone="UTC")
    profile = Profile("p1")
    entered: list[str] = []
    for record in records:
        _, event = decode_resolved(record)
        entered += [c.segment_id for c in engine.apply(profile, event, event.timestamp_ms) if c.entered]
    # The revenue-only order counts in segments at once, as it does in the warehouse.
    assert entered[0] == "spent-40"
    # Net lifetime revenue equals what analysts sum in events_by_person.
    assert profile.revenue == pytest.approx(sum(columns["revenue"])) == 92.0
    assert "lifetime-100" in entered and not profile.is_member("lifetime-100")
