"""The audience topics on the wire: ``audiences.inputs`` and ``audiences.deltas`` records <-> the domain.

A configuration travels as JSON (the destinations as they validate, and the consent policy) and is
validated again when read, so a record written by a newer omniseg with rules this one does not know is
a clear error, never a half-read configuration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.destinations import DestinationError, load_destinations
from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import (
    AudienceInput,
    Configuration,
    MembershipChange,
    PersonRemoved,
    PersonUpdate,
)
from streams.domain.consent import ConsentPolicy, Decision
from streams.wire.codecs import AUDIENCE_DELTA_CODEC, AUDIENCE_INPUT_CODEC, SerializationError

CONFIGURATION_SOURCE = "audiences.inputs configuration"


def _ms(value: datetime | int) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def configuration_json(configuration: Configuration) -> str:
    policy = configuration.policy
    return orjson.dumps(
        {
            "destinations": [d.model_dump(mode="json") for d in configuration.destinations],
            "policy": {
                "purposes": list(policy.purposes),
                "defaults": dict(policy.defaults),
                "aliases": dict(policy.aliases),
            },
        }
    ).decode()


def configuration_from_json(text: str) -> Configuration:
    try:
        data = orjson.loads(text)
        raw_policy = data["policy"]
        policy = ConsentPolicy(
            purposes=tuple(raw_policy["purposes"]),
            defaults=dict(raw_policy["defaults"]),
            aliases=dict(raw_policy["aliases"]),
        )
        destinations = load_destinations(
            [(CONFIGURATION_SOURCE, orjson.dumps(data["destinations"]).decode())],
            purposes=policy.purposes,
        )
    except DestinationError as exc:
        raise SerializationError(f"audience configuration does not validate: {exc.problems[0]}") from exc
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"audience configuration is malformed: {exc}") from exc
    return Configuration(tuple(destinations), policy)


def encode_input(item: AudienceInput, at: datetime) -> bytes:
    record: dict[str, Any] = {"at": at}
    if isinstance(item, MembershipChange):
        record |= {
            "kind": "membership",
            "personId": item.person_id,
            "segmentId": item.segment_id,
            "subject": item.subject,
            "seq": item.seq,
        }
    elif isinstance(item, PersonUpdate):
        record |= {
            "kind": "person",
            "personId": item.person_id,
            "identifiers": [
                {"kind": str(kind), "value": value}
                for kind in sorted(item.identifiers)
                for value in item.identifiers[kind]
            ],
            "consent": [
                {"purpose": purpose, "granted": decision.granted, "at": decision.at}
                for purpose, decision in sorted(item.consent.items())
            ],
        }
    elif isinstance(item, PersonRemoved):
        record |= {"kind": "removed", "personId": item.person_id}
    else:
        record |= {"kind": "configuration", "configuration": configuration_json(item)}
    return AUDIENCE_INPUT_CODEC.encode(record)


def decode_input(data: bytes) -> AudienceInput:
    record = AUDIENCE_INPUT_CODEC.decode(data)
    kind = record["kind"]
    if kind == "configuration":
        return configuration_from_json(record["configuration"] or "")
    person_id = record["personId"]
    if not person_id:
        raise SerializationError(f"audience input of kind {kind} without a personId")
    if kind == "membership":
        if not record["segmentId"] or record["seq"] < 1:
            raise SerializationError("membership input without a segmentId or with a seq below 1")
        return MembershipChange(person_id, record["segmentId"], record["subject"], record["seq"])
    if kind == "removed":
        return PersonRemoved(person_id)
    identifiers: dict[AudienceIdKind, list[str]] = {}
    for entry in record["identifiers"]:
        try:
            identifiers.setdefault(AudienceIdKind(entry["kind"]), []).append(entry["value"])
        except ValueError:
            continue  # a kind a newer omniseg sends; this one has no rule for it
    consent = {e["purpose"]: Decision(e["granted"], _ms(e["at"])) for e in record["consent"]}
    return PersonUpdate(person_id, {k: tuple(v) for k, v in identifiers.items()}, consent)


def encode_delta(delta: Delta, at: datetime) -> bytes:
    return AUDIENCE_DELTA_CODEC.encode(
        {
            "destinationId": delta.destination_id,
            "audienceId": delta.audience_id,
            "kind": str(delta.kind),
            "hash": delta.hash,
            "added": delta.added,
            "at": at,
        }
    )


def decode_delta(data: bytes) -> tuple[Delta, datetime]:
    record = AUDIENCE_DELTA_CODEC.decode(data)
    try:
        kind = AudienceIdKind(record["kind"])
    except ValueError as exc:
        raise SerializationError(f"audience delta of unknown identifier kind {record['kind']!r}") from exc
    at = record["at"]
    when = at if isinstance(at, datetime) else datetime.fromtimestamp(at / 1000, UTC)
    delta = Delta(record["destinationId"], record["audienceId"], kind, record["hash"], record["added"])
    return delta, when
