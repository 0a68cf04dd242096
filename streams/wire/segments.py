"""Bytes in and out of the segment stage: events.resolved -> SegmentEvent, and the records it writes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from streams.domain.experiments.assignment import Covering, RunningUseCase
from streams.domain.experiments.model import Arm
from streams.domain.segments.backfill import BackfillBatch, Entry
from streams.domain.segments.changes import Change
from streams.domain.segments.events import SegmentEvent, line_item, segment_event
from streams.domain.segments.profile import FORMAT, Profile
from streams.wire.codecs import (
    EVENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    MAGIC,
    RESOLVED_CODEC,
    SEGMENT_CHANGE_CODEC,
    SEGMENT_DEFINITION_CODEC,
    SEGMENT_FORWARD_CODEC,
    SEGMENT_STATE_CODEC,
    SerializationError,
)
from streams.wire.identity import CONTEXT_FIELDS, DEVICE_FIELDS, RecordReader, avro_long

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
_C_CHANNEL, _C_AGENT, _C_ZONE, _C_DEVICE, _C_CONSENT = (
    CONTEXT_FIELDS.index(n) for n in ("channel", "userAgent", "timezone", "device", "consent")
)
_D_TYPE = DEVICE_FIELDS.index("type")
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
_X_KIND, _X_PERSON, _X_MERGED, _X_MESSAGE = (
    CHANGE_READER.index(n) for n in ("kind", "personId", "mergedPersonIds", "messageId")
)


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _consent_of(consent: Any) -> tuple[dict[str, bool], ...]:
    """``(categoryPreferences,)`` of a context.consent record that has any, else ``()`` (the default)."""
    if consent is None:
        return ()
    preferences = consent[0] if isinstance(consent, tuple) else consent.get("categoryPreferences")
    return (preferences,) if preferences else ()


def decode_resolved(value: bytes) -> tuple[str, SegmentEvent]:
    """(personId, event) of one events.resolved record; raises SerializationError if corrupt."""
    row = RESOLVED_READER.decode(value)
    event = row[_R_EVENT]
    context = event[_E_CONTEXT]
    device = context[_C_DEVICE]
    kind = event[_E_TYPE]
    lines = tuple(
        line_item(line[_L_SKU], line[_L_EAN], line[_L_APP], line[_L_QTY], line[_L_PRICE])
        for line in event[_E_LINES]
    )
    return row[_R_PERSON], segment_event(
        event[_E_MID],  # message_id
        event[_E_TS],  # timestamp_ms
        event[_E_NAME] if kind == "track" and event[_E_NAME] else kind,  # name
        context[_C_CHANNEL],  # channel
        device[_D_TYPE] if device is not None else None,  # device_type
        context[_C_AGENT],  # user_agent
        context[_C_ZONE],  # timezone
        _json_object(event[_E_PROPS]),  # properties
        _json_object(event[_E_TRAITS]),  # traits
        lines,
        tuple(row[_R_IDS]),  # identifiers
        *_consent_of(context[_C_CONSENT]),  # consent: the category map, when the event states one
    )


def decode_forward(value: bytes) -> tuple[str, str, str | None, str | None, bytes | None, bytes | None]:
    """(kind, personId, fromPersonId, intoPersonId, state, event) of one segments.forward record."""
    row = FORWARD_READER.decode(value)
    return row[_F_KIND], row[_F_PERSON], row[_F_FROM], row[_F_INTO], row[_F_STATE], row[_F_EVENT]


_F_BACKFILL = FORWARD_READER.index("backfill")
_BACKFILL_FIELDS = ("runId", "part", "last", "features", "feature", "timestamps", "values", "messageHashes")


def encode_backfill(batch: BackfillBatch, now_ms: int, deliver_to: str | None = None) -> bytes:
    """The segments.forward record (kind ``backfill``) of one part of a person's backfill, for the
    person's owner, or for ``deliver_to`` (the survivor of a merge since; fromPersonId keeps the person
    the run addressed)."""
    index = {fid: i for i, fid in enumerate(batch.features)}
    feature: list[int] = []
    timestamps: list[int] = []
    values: list[float] = []
    hashes: list[int] = []
    for fid, entries in batch.entries.items():
        at = index[fid]
        for ts, value, digest in entries:
            feature.append(at)
            timestamps.append(ts)
            values.append(value)
            hashes.append(digest)
    return SEGMENT_FORWARD_CODEC.encode(
        {
            "kind": "backfill",
            "personId": deliver_to or batch.person_id,
            "fromPersonId": batch.person_id if deliver_to else None,
            "at": now_ms,
            "backfill": {
                "runId": batch.run_id,
                "part": batch.part,
                "last": batch.last,
                "features": list(batch.features),
                "feature": feature,
                "timestamps": timestamps,
                "values": values,
                "messageHashes": hashes,
            },
        }
    )


def encode_backfill_end(run_id: str, features: Sequence[str], now_ms: int) -> bytes:
    """The segments.forward record (kind ``backfill_end``, no person) that ends a run on a partition."""
    return SEGMENT_FORWARD_CODEC.encode(
        {
            "kind": "backfill_end",
            "personId": "",
            "at": now_ms,
            "backfill": {
                "runId": run_id,
                "part": 0,
                "last": True,
                "features": list(features),
                "feature": [],
                "timestamps": [],
                "values": [],
                "messageHashes": [],
            },
        }
    )


def decode_backfill(value: bytes) -> BackfillBatch:
    """The part carried by a segments.forward record of kind ``backfill`` or ``backfill_end`` (its
    ``person_id`` is the person the run addressed, which may have been merged into the receiver)."""
    row = FORWARD_READER.decode(value)
    part = row[_F_BACKFILL]
    if part is None:
        raise SerializationError(f"segments.forward {row[_F_KIND]} record without its backfill part")
    if isinstance(part, dict):  # read through the codec (another writer version): a dict
        part = tuple(part[name] for name in _BACKFILL_FIELDS)
    run_id, number, last, features, feature, timestamps, values, hashes = part
    if not len(feature) == len(timestamps) == len(values) == len(hashes):
        raise SerializationError(f"backfill part {run_id}/{number}: entry arrays of different lengths")
    entries: dict[str, list[Entry]] = {}
    try:
        for at, ts, amount, digest in zip(feature, timestamps, values, hashes, strict=True):
            entries.setdefault(features[at], []).append((ts, amount, digest))
    except IndexError as exc:
        raise SerializationError(f"backfill part {run_id}/{number}: feature index out of range") from exc
    return BackfillBatch(
        run_id,
        row[_F_FROM] or row[_F_PERSON],
        number,
        last,
        tuple(features),
        {fid: tuple(found) for fid, found in entries.items()},
    )


def decode_merge(value: bytes) -> tuple[str, str, list[str], str]:
    """(kind, surviving personId, merged person ids, messageId) of one identity.changes record (an
    erasure's messageId is its request id)."""
    row = CHANGE_READER.decode(value)
    return row[_X_KIND], row[_X_PERSON], list(row[_X_MERGED]), row[_X_MESSAGE]


def decode_state(value: bytes) -> tuple[str, str | None, bytes]:
    row = STATE_READER.decode(value)
    return row[_S_PERSON], row[_S_MERGED], row[_S_STATE]


def change_id(change: Change) -> str:
    """Stable per (person, segment, subject, seq): a change produced again keeps its id.

    A UUID-formatted BLAKE2b digest (not uuid5: this runs for every change and uuid5 costs 8 µs).
    """
    name = f"{change.person_id}\x1f{change.segment_id}\x1f{change.subject or ''}\x1f{change.seq}"
    h = hashlib.blake2b(name.encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# Hand-assembled Avro bodies for the two records written per change and per profile (fastavro's
# writer costs about 11 µs a record; tests/unit/wire/test_segments_wire.py proves the bytes equal its).
_CHANGE_HEADER = MAGIC + SEGMENT_CHANGE_CODEC.current.fingerprint
_STATE_HEADER = MAGIC + SEGMENT_STATE_CODEC.current.fingerprint
_NULL = b"\x00"
_CONTACT_NAMES = ("email", "phone", "espSubscriberId", "userId", "crmId", "loyaltyCard", "advertisingId")
_TRIGGERS = {
    name: avro_long(i)
    for i, name in enumerate(("event", "timer", "merge", "definition", "erasure", "backfill", "retention"))
}
_ENTERED, _EXITED = avro_long(0), avro_long(1)
_STATE_FORMAT = avro_long(FORMAT)


_SMALL = [avro_long(n) for n in range(4096)]


def _long(value: int) -> bytes:
    return _SMALL[value] if 0 <= value < 4096 else avro_long(value)


# The times written are mostly one: a turn's changes and states share their ``at`` and emitted time.
# One (value, encoded) pair, replaced whole (stages in threads of one process share it).
_LAST_MOMENT: list[tuple[int, bytes]] = [(-1, avro_long(-1))]


def _moment(value: int) -> bytes:
    """``avro_long(value)``, remembered for the last value (a timestamp costs ~0.5 µs to encode)."""
    last = _LAST_MOMENT[0]
    if last[0] == value:
        return last[1]
    encoded = avro_long(value)
    _LAST_MOMENT[0] = (value, encoded)
    return encoded


def _text(value: str) -> bytes:
    data = value.encode()
    return _long(len(data)) + data


def _optional(value: str | None) -> bytes:
    return _NULL if value is None else b"\x02" + _text(value)


_TRUE, _FALSE = b"\x01", b"\x00"


def _consent(consent: dict[str, list[Any]]) -> bytes:
    """The ``consent`` array: one block of (purpose, granted, at) records, sorted by purpose, then 0."""
    if not consent:
        return _NULL  # an empty array is its end marker alone
    items = [
        _cached_text(purpose) + (_TRUE if entry[0] else _FALSE) + avro_long(entry[1])
        for purpose, entry in sorted(consent.items())
    ]
    return _long(len(items)) + b"".join(items) + _NULL


def encode_change(change: Change, profile: Profile, emitted_at_ms: int) -> bytes:
    return encode_changes([change], profile, emitted_at_ms)[0]


_ARM_INDEX = {Arm.CONTROL: avro_long(0), Arm.TREATMENT: avro_long(1)}


def _usecases(person_id: str, usecases: Sequence[RunningUseCase]) -> bytes:
    """The ``usecases`` array of one change: each covering use case with the person's arm."""
    items = [
        _cached_text(usecase.usecase_id) + _long(usecase.version) + _ARM_INDEX[usecase.arm(person_id)]
        for usecase in usecases
    ]
    return _long(len(items)) + b"".join(items) + _NULL


# Segment ids, subjects and reasons repeat across changes: their encoded forms are kept (bounded).
_TEXTS: dict[str, bytes] = {}
_MAX_TEXTS = 50_000


def _cached_text(value: str) -> bytes:
    encoded = _TEXTS.get(value)
    if encoded is None:
        encoded = _text(value)
        if len(_TEXTS) < _MAX_TEXTS:
            _TEXTS[value] = encoded
    return encoded


def encode_changes(
    changes: Iterable[Change], profile: Profile, emitted_at_ms: int, usecases: Covering | None = None
) -> list[bytes]:
    """The segments.changes records of one profile's changes (person and contacts encoded once), each
    with the running use cases covering its segment and subject (``usecases``) and the person's arm."""
    contacts = profile.contacts
    person = _text(profile.person_id)
    parts = []
    for name in _CONTACT_NAMES:
        entry = contacts.get(name)
        parts.append(_NULL if entry is None else b"\x02" + _text(entry[0]))
    parts.append(_moment(emitted_at_ms))
    parts.append(_consent(profile.consent))
    tail = b"".join(parts)
    records = []
    for change in changes:
        subject, message_id = change.subject, change.message_id
        records.append(
            b"".join(
                (
                    _CHANGE_HEADER,
                    _text(change_id(change)),
                    person if change.person_id == profile.person_id else _text(change.person_id),
                    _cached_text(change.segment_id),
                    _NULL if subject is None else b"\x02" + _cached_text(subject),
                    _ENTERED if change.entered else _EXITED,
                    _long(change.seq),
                    _moment(change.at),
                    _TRIGGERS[change.trigger],
                    _cached_text(change.reason),
                    _NULL if message_id is None else b"\x02" + _text(message_id),
                    _long(change.version),
                    tail,
                    _usecases(change.person_id, covered)
                    if usecases and (covered := usecases.get((change.segment_id, subject)))
                    else _NULL,
                )
            )
        )
    return records


def encode_state(person_id: str, profile: Profile | None, merged_into: str | None, now_ms: int) -> bytes:
    state = profile.to_json() if profile is not None else b"{}"
    return b"".join(
        (
            _STATE_HEADER,
            _text(person_id),
            _optional(merged_into),
            _STATE_FORMAT,
            _long(len(state)),
            state,
            _moment(now_ms),
        )
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
