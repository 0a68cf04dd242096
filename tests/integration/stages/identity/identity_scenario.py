"""A known identity history, as the records the streaming resolver publishes, for warehouse tests.

Ann browses the web anonymously (person A), then uses the app on her phone (person B; B absorbs A),
then logs in on the web with her customer id and email (person C, the oldest: C absorbs B, so the chain
is A -> B -> C), and buys in store with her loyalty card. Dan (person D) is someone else; one of his
events tried to link Ann's phone and was refused. The device's assignment is never re-pointed to C, so
readers must map it through the merges.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from streams.domain.events import Event
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import person_id_for
from streams.sinks.identity_tables import IdentityBatch
from streams.wire.codecs import IDENTITY_ASSIGNMENT_CODEC, IDENTITY_CHANGE_CODEC, RESOLVED_CODEC
from streams.wire.row_decoder import ResolvedDecoder

A = person_id_for(Identifier(IdKind.ANONYMOUS_ID, "web-a1"))
B = person_id_for(Identifier(IdKind.DEVICE_ID, "dev-b"))
C = person_id_for(Identifier(IdKind.CUSTOMER_ID, "cust-42"))
D = person_id_for(Identifier(IdKind.CUSTOMER_ID, "cust-99"))
ANN_EMAIL = "email:ann@shop.com"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def _event(message_id: str, channel: str, when: datetime, **segment: Any) -> dict[str, Any]:
    call = segment.pop("type", "track")
    payload = {"type": call, "messageId": message_id, "timestamp": when.isoformat(), **segment}
    event = Event.from_segment(
        payload, channel=channel, source=f"{channel}-src", received_at=when, call_type=call
    )
    return event.to_avro()


def resolved_events() -> list[dict[str, Any]]:
    """Six events; e1..e5 are Ann's (under A, B and C), e6 is Dan's."""
    rows = [
        ("e1", "web", at(5, 9), A, ["anonymous_id:web-a1"],
         {"type": "page", "name": "Home", "anonymousId": "web-a1"}),
        ("e2", "web", at(5, 9, 5), A, ["anonymous_id:web-a1"],
         {"event": "Product Viewed", "anonymousId": "web-a1"}),
        ("e3", "app", at(5, 12), B, ["device_id:dev-b"],
         {"type": "screen", "name": "Basket", "anonymousId": "app-b1",
          "context": {"device": {"id": "dev-b"}}}),
        ("e4", "store", at(6, 15), C, ["customer_id:cust-42", "loyalty_card:LC123"],
         {"event": "Order Completed", "userId": "cust-42", "identifiers": {"loyaltyCard": "LC123"},
          "lines": [{"ean": "5000000000001", "quantity": 2, "unitPrice": 12.5, "currency": "GBP"}]}),
        ("e5", "web", at(6, 10), C, ["customer_id:cust-42", ANN_EMAIL, "anonymous_id:web-a1"],
         {"event": "Signed In", "userId": "cust-42", "anonymousId": "web-a1",
          "identifiers": {"email": " Ann@Shop.com "}}),
        ("e6", "web", at(6, 11), D, ["customer_id:cust-99", "anonymous_id:web-d1"],
         {"type": "page", "name": "Home", "userId": "cust-99", "anonymousId": "web-d1"}),
    ]  # fmt: skip
    out = []
    for message_id, channel, when, person, ids, segment in rows:
        out.append(
            {
                "personId": person,
                "identifiers": ids,
                "resolvedAt": when,
                "event": _event(message_id, channel, when, **dict(segment)),
            }
        )
    return out


def changes() -> list[dict[str, Any]]:
    """Merge A -> B, merge B -> C (chain-closed: lists A too), and one refused link."""
    return [
        {
            "changeId": "chg-1",
            "kind": "merged",
            "personId": B,
            "mergedPersonId": A,
            "mergedPersonIds": [A],
            "identifiers": ["anonymous_id:web-a1"],
            "messageId": "e3",
            "channel": "app",
            "at": at(5, 12),
        },
        {
            "changeId": "chg-2",
            "kind": "merged",
            "personId": C,
            "mergedPersonId": B,
            "mergedPersonIds": [B, A],
            "identifiers": ["anonymous_id:web-a1", "device_id:dev-b"],
            "messageId": "e5",
            "channel": "web",
            "at": at(6, 10),
        },
        {
            "changeId": "chg-3",
            "kind": "rejected",
            "personId": D,
            "identifiers": ["device_id:dev-b"],
            "conflictingPersonId": C,
            "reason": "merge_limit",
            "messageId": "e6",
            "channel": "web",
            "at": at(6, 11),
        },
    ]


def assignments() -> list[dict[str, Any]]:
    """Owners over time. device_id:dev-b is never re-pointed from B (readers map it through merges)."""
    rows = [
        ("anonymous_id:web-a1", A, 1, at(5, 9), at(5, 9)),
        ("device_id:dev-b", B, 1, at(5, 12), at(5, 12)),
        ("anonymous_id:web-a1", B, 2, at(5, 9), at(5, 12)),
        ("customer_id:cust-42", C, 1, at(4, 8), at(4, 8)),
        ("loyalty_card:LC123", C, 1, at(4, 8), at(4, 8)),
        (ANN_EMAIL, C, 1, at(6, 10), at(6, 10)),
        ("anonymous_id:web-a1", C, 3, at(5, 9), at(6, 10)),
        ("customer_id:cust-99", D, 1, at(6, 11), at(6, 11)),
        ("anonymous_id:web-d1", D, 1, at(6, 11), at(6, 11)),
    ]
    return [
        {
            "identifier": key,
            "kind": key.partition(":")[0],
            "personId": person,
            "version": version,
            "firstSeen": first,
            "at": when,
        }
        for key, person, version, first, when in rows
    ]


def batch() -> IdentityBatch:
    """The whole scenario as table rows, built through the sink's own decode and column code."""
    out = IdentityBatch()
    decoder = ResolvedDecoder()
    for offset, record in enumerate(assignments()):
        out.add_assignment(
            IDENTITY_ASSIGNMENT_CODEC.decode(IDENTITY_ASSIGNMENT_CODEC.encode(record)), 0, offset
        )
    for offset, record in enumerate(changes()):
        out.add_change(IDENTITY_CHANGE_CODEC.decode(IDENTITY_CHANGE_CODEC.encode(record)), 0, offset)
    for offset, record in enumerate(resolved_events()):
        out.add_resolved(decoder.decode(RESOLVED_CODEC.encode(record)), 0, offset)
    return out


def json_inserts(rows: IdentityBatch) -> Iterator[str]:
    """``INSERT ... FORMAT JSONEachRow`` statements for chDB (DateTime columns as Unix seconds)."""
    for table, columns in rows.tables():
        lines = [
            json.dumps(dict(zip(columns.names, values, strict=True)))
            for values in zip(*columns.columns, strict=True)
        ]
        yield f"INSERT INTO {table} ({', '.join(columns.names)}) FORMAT JSONEachRow\n" + "\n".join(lines)
