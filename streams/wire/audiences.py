"""The audience topics on the wire: ``audiences.inputs`` and ``audiences.deltas`` records <-> the domain.

A configuration travels as JSON (the destinations as they validate, the consent policy and the running
use cases) and is validated again when read, so a record written by a newer omniseg with rules this one
does not know is a clear error, never a half-read configuration. A configuration written before use
cases existed has no ``usecases``: none is running.
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
from streams.domain.experiments.assignment import RunningUseCase
from streams.wire.codecs import AUDIENCE_DELTA_CODEC, AUDIENCE_INPUT_CODEC, MAGIC, SerializationError
from streams.wire.identity import RecordReader, avro_long, avro_string

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
            "usecases": [
                {
                    "usecaseId": usecase.usecase_id,
                    "version": usecase.version,
                    "segmentId": usecase.segment_id,
                    "subject": usecase.subject,
                    "controlShare": usecase.control_share,
                }
                for usecase in configuration.usecases
            ],
        }
    ).decode()


def _usecase(raw: Any) -> RunningUseCase:
    usecase_id, version, segment_id = raw["usecaseId"], raw["version"], raw["segmentId"]
    subject, share = raw["subject"], raw["controlShare"]
    if not (isinstance(usecase_id, str) and usecase_id and isinstance(segment_id, str) and segment_id):
        raise ValueError(f"use case without a usecaseId or segmentId: {raw!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"use case {usecase_id!r}: version {version!r} is not a positive integer")
    if subject is not None and not isinstance(subject, str):
        raise ValueError(f"use case {usecase_id!r}: subject {subject!r} is not a string")
    if not isinstance(share, int | float) or isinstance(share, bool) or not 0.0 <= share <= 1.0:
        raise ValueError(f"use case {usecase_id!r}: controlShare {share!r} is not between 0 and 1")
    return RunningUseCase(usecase_id, version, segment_id, subject, float(share))


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
        usecases = tuple(_usecase(raw) for raw in data.get("usecases", ()))
    except DestinationError as exc:
        raise SerializationError(f"audience configuration does not validate: {exc.problems[0]}") from exc
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SerializationError(f"audience configuration is malformed: {exc}") from exc
    return Configuration(tuple(destinations), policy, usecases)


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


# A membership input is written for every segment change: its bytes are assembled here (fastavro's
# writer and a datetime per record cost several times more); tests/unit/wire/test_audiences_wire.py
# proves them equal to the codec's.
_INPUT_HEADER = MAGIC + AUDIENCE_INPUT_CODEC.current.fingerprint
_MEMBERSHIP = avro_long(0)  # the enum index of "membership"
_SOME = b"\x02"  # the union branch index 1 (the string of ["null", "string"])
_NONE = b"\x00"
_EMPTY_ARRAYS_AND_NO_CONFIGURATION = b"\x00\x00\x00"  # identifiers [], consent [], configuration null


def encode_membership(person_id: str, segment_id: str, subject: str | None, seq: int, at_ms: int) -> bytes:
    """``encode_input(MembershipChange(...), at)``, assembled directly."""
    return b"".join(
        (
            _INPUT_HEADER,
            _MEMBERSHIP,
            _SOME + avro_string(person_id),
            _SOME + avro_string(segment_id),
            _NONE if subject is None else _SOME + avro_string(subject),
            avro_long(seq),
            _EMPTY_ARRAYS_AND_NO_CONFIGURATION,
            avro_long(at_ms),
        )
    )


# The writer decodes every input, so with the compiled tuple reader (fields by position).
INPUT_READER = RecordReader(AUDIENCE_INPUT_CODEC)
_I_KIND, _I_PERSON, _I_SEGMENT, _I_SUBJECT, _I_SEQ, _I_IDS, _I_CONSENT, _I_CONFIGURATION = (
    INPUT_READER.index(name)
    for name in (
        "kind", "personId", "segmentId", "subject", "seq", "identifiers", "consent", "configuration"
    )
)  # fmt: skip


def _entry(entry: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """A nested record as a tuple (the tuple reader's form), also from an older version's dict."""
    return tuple(entry[name] for name in names) if isinstance(entry, dict) else tuple(entry)


def decode_input(data: bytes) -> AudienceInput:
    row = INPUT_READER.decode(data)
    kind = row[_I_KIND]
    if kind == "configuration":
        return configuration_from_json(row[_I_CONFIGURATION] or "")
    person_id = row[_I_PERSON]
    if not person_id:
        raise SerializationError(f"audience input of kind {kind} without a personId")
    if kind == "membership":
        if not row[_I_SEGMENT] or row[_I_SEQ] < 1:
            raise SerializationError("membership input without a segmentId or with a seq below 1")
        return MembershipChange(person_id, row[_I_SEGMENT], row[_I_SUBJECT], row[_I_SEQ])
    if kind == "removed":
        return PersonRemoved(person_id)
    identifiers: dict[AudienceIdKind, list[str]] = {}
    for entry in row[_I_IDS]:
        id_kind, value = _entry(entry, ("kind", "value"))
        try:
            identifiers.setdefault(AudienceIdKind(id_kind), []).append(value)
        except ValueError:
            continue  # a kind a newer omniseg sends; this one has no rule for it
    consent: dict[str, Decision] = {}
    for entry in row[_I_CONSENT]:
        purpose, granted, at = _entry(entry, ("purpose", "granted", "at"))
        consent[purpose] = Decision(granted, _ms(at))
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
