"""Bytes in and out of the segment stage: events.resolved -> SegmentEvent, and the records it writes."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from streams.agents.identity_wire import _CONTEXT, _DEVICE, RecordReader
from streams.domain.segments.engine import Change
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.profile import Profile
from streams.serde import (
    EVENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    RESOLVED_CODEC,
    SEGMENT_CHANGE_CODEC,
    SEGMENT_DEFINITION_CODEC,
    SEGMENT_FORWARD_CODEC,
    SEGMENT_STATE_CODEC,
)

RESOLVED_READER = RecordReader(RESOLVED_CODEC)
FORWARD_READER = RecordReader(SEGMENT_FORWARD_CODEC)
STATE_READER = RecordReader(SEGMENT_STATE_CODEC)
CHANGE_READER = RecordReader(IDENTITY_CHANGE_CODEC)
DEFINITION_READER = RecordReader(SEGMENT_DEFINITION_CODEC)

_EVENT = [f["name"] for f in EVENT_CODEC.current.parsed["fields"]]
_R_PERSON, _R_IDS, _R_EVENT = (RESOLVED_READER.index(n) for n in ("personId", "identifiers", "event"))
(_E_MID, _E_TYPE, _E_NAME, _E_TRAITS, _E_PROPS, _E_CONTEXT, _E_LINES, _E_TS) = (
    _EVENT.index(n)
    for n in ("messageId", "type", "event", "traits", "properties", "context", "lines", "timestamp")
)
_C_CHANNEL, _C_AGENT, _C_ZONE, _C_DEVICE = (
    _CONTEXT.index(n) for n in ("channel", "userAgent", "timezone", "device")
)
_D_TYPE = _DEVICE.index("type")
_LINE = [
    f["name"]
    for f in next(f for f in EVENT_CODEC.current.parsed["fields"] if f["name"] == "lines")["type"]["items"][
        "fields"
    ]
]
_L_SKU, _L_EAN, _L_APP, _L_QTY, _L_PRICE = (
    _LINE.index(n) for n in ("sku", "ean", "appProductId", "quantity", "unitPrice")
)
_F_KIND, _F_PERSON, _F_FROM, _F_INTO, _F_STATE, _F_EVENT = (
    FORWARD_READER.index(n) for n in ("kind", "personId", "fromPersonId", "intoPersonId", "state", "event")
)
_S_PERSON, _S_MERGED, _S_STATE = (STATE_READER.index(n) for n in ("personId", "mergedInto", "state"))
_X_KIND, _X_PERSON, _X_MERGED = (CHANGE_READER.index(n) for n in ("kind", "personId", "mergedPersonIds"))
_CHANGE_NS = uuid.UUID("6f1d0c1e-2b8a-5c9e-9d52-5e6d0b7c2a41")


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def decode_resolved(value: bytes) -> tuple[str, SegmentEvent]:
    """(personId, event) of one events.resolved record; raises SerializationError if corrupt."""
    row = RESOLVED_READER.decode(value)
    event = row[_R_EVENT]
    context = event[_E_CONTEXT]
    device = context[_C_DEVICE]
    kind = event[_E_TYPE]
    lines = tuple(
        LineItem(
            sku=line[_L_SKU],
            ean=line[_L_EAN],
            app_product_id=line[_L_APP],
            quantity=line[_L_QTY],
            unit_price=line[_L_PRICE],
        )
        for line in event[_E_LINES]
    )
    return row[_R_PERSON], SegmentEvent(
        message_id=event[_E_MID],
        timestamp_ms=event[_E_TS],
        name=event[_E_NAME] if kind == "track" and event[_E_NAME] else kind,
        channel=context[_C_CHANNEL],
        device_type=device[_D_TYPE] if device is not None else None,
        user_agent=context[_C_AGENT],
        timezone=context[_C_ZONE],
        properties=_json_object(event[_E_PROPS]),
        traits=_json_object(event[_E_TRAITS]),
        lines=lines,
        identifiers=tuple(row[_R_IDS]),
    )


def decode_forward(value: bytes) -> tuple[str, str, str | None, str | None, bytes | None, bytes | None]:
    """(kind, personId, fromPersonId, intoPersonId, state, event) of one segments.forward record."""
    row = FORWARD_READER.decode(value)
    return row[_F_KIND], row[_F_PERSON], row[_F_FROM], row[_F_INTO], row[_F_STATE], row[_F_EVENT]


def decode_merge(value: bytes) -> tuple[str, str, list[str]]:
    """(kind, surviving personId, merged person ids) of one identity.changes record."""
    row = CHANGE_READER.decode(value)
    return row[_X_KIND], row[_X_PERSON], list(row[_X_MERGED])


def decode_state(value: bytes) -> tuple[str, str | None, bytes]:
    row = STATE_READER.decode(value)
    return row[_S_PERSON], row[_S_MERGED], row[_S_STATE]


def change_id(change: Change) -> str:
    """Stable per (person, segment, subject, seq): a change produced again keeps its id."""
    name = f"{change.person_id}\x1f{change.segment_id}\x1f{change.subject or ''}\x1f{change.seq}"
    return str(uuid.uuid5(_CHANGE_NS, name))


def encode_change(change: Change, profile: Profile, emitted_at_ms: int) -> bytes:
    contacts = profile.contacts
    return SEGMENT_CHANGE_CODEC.encode(
        {
            "changeId": change_id(change),
            "personId": change.person_id,
            "segmentId": change.segment_id,
            "subject": change.subject,
            "change": "entered" if change.entered else "exited",
            "seq": change.seq,
            "at": change.at,
            "trigger": change.trigger,
            "reason": change.reason,
            "messageId": change.message_id,
            "definitionVersion": change.version,
            "contacts": {
                name: contacts[name][0] if name in contacts else None
                for name in ("email", "phone", "espSubscriberId", "userId", "crmId", "loyaltyCard")
            },
            "emittedAt": emitted_at_ms,
        }
    )


def encode_state(person_id: str, profile: Profile | None, merged_into: str | None, now_ms: int) -> bytes:
    return SEGMENT_STATE_CODEC.encode(
        {
            "personId": person_id,
            "mergedInto": merged_into,
            "format": 1,
            "state": profile.to_json() if profile is not None else b"{}",
            "updatedAt": now_ms,
        }
    )


def encode_forward(
    kind: str,
    person_id: str,
    now_ms: int,
    *,
    from_person: str | None = None,
    into_person: str | None = None,
    state: bytes | None = None,
    event: bytes | None = None,
) -> bytes:
    return SEGMENT_FORWARD_CODEC.encode(
        {
            "kind": kind,
            "personId": person_id,
            "fromPersonId": from_person,
            "intoPersonId": into_person,
            "state": state,
            "event": event,
            "at": now_ms,
        }
    )
