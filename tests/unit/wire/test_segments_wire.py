"""The segment stage's hand-assembled records equal fastavro's encoding, and decoding reads what the
collector and resolver write."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.events import Event
from streams.domain.experiments.assignment import RunningUseCase, covering
from streams.domain.segments.changes import Change
from streams.domain.segments.profile import FORMAT, Profile
from streams.wire.codecs import EVENT_CODEC, SEGMENT_CHANGE_CODEC, SEGMENT_STATE_CODEC
from streams.wire.identity import event_body, resolved_event
from streams.wire.segments import (
    change_id,
    decode_resolved,
    decode_state,
    encode_change,
    encode_changes,
    encode_state,
)

_text = st.text(max_size=40)
_maybe = st.none() | _text


@given(
    person=_text,
    segment=_text,
    subject=_maybe,
    entered=st.booleans(),
    seq=st.integers(1, 2**40),
    at=st.integers(0, 2**45),
    trigger=st.sampled_from(["event", "timer", "merge", "definition", "erasure", "backfill", "retention"]),
    reason=_text,
    message_id=_maybe,
    version=st.integers(1, 2**30),
    email=_maybe,
    phone=_maybe,
    advertising_id=_maybe,
    consent=st.dictionaries(_text, st.tuples(st.booleans(), st.integers(0, 2**45)), max_size=4),
)
def test_change_bytes_equal_fastavro(
    person: str,
    segment: str,
    subject: str | None,
    entered: bool,
    seq: int,
    at: int,
    trigger: str,
    reason: str,
    message_id: str | None,
    version: int,
    email: str | None,
    phone: str | None,
    advertising_id: str | None,
    consent: dict[str, tuple[bool, int]],
) -> None:
    change = Change(person, segment, subject, entered, seq, at, trigger, reason, message_id, version)
    profile = Profile(person)
    if email is not None:
        profile.contacts["email"] = [email, 1]
    if phone is not None:
        profile.contacts["phone"] = [phone, 1]
    if advertising_id is not None:
        profile.contacts["advertisingId"] = [advertising_id, 1]
    profile.consent = {purpose: [granted, at] for purpose, (granted, at) in consent.items()}
    expected = SEGMENT_CHANGE_CODEC.encode(
        {
            "changeId": change_id(change),
            "personId": person,
            "segmentId": segment,
            "subject": subject,
            "change": "entered" if entered else "exited",
            "seq": seq,
            "at": at,
            "trigger": trigger,
            "reason": reason,
            "messageId": message_id,
            "definitionVersion": version,
            "contacts": {
                "email": email,
                "phone": phone,
                "espSubscriberId": None,
                "userId": None,
                "crmId": None,
                "loyaltyCard": None,
                "advertisingId": advertising_id,
            },
            "emittedAt": 123,
            "consent": [
                {"purpose": purpose, "granted": granted, "at": at}
                for purpose, (granted, at) in sorted(consent.items())
            ],
            "usecases": [],
        }
    )
    assert encode_change(change, profile, 123) == expected


@given(person=_text, merged_into=_maybe, now=st.integers(0, 2**45))
def test_state_bytes_equal_fastavro_and_round_trip(person: str, merged_into: str | None, now: int) -> None:
    profile = Profile(person, purchase_count=3)
    encoded = encode_state(person, profile, merged_into, now)
    expected = SEGMENT_STATE_CODEC.encode(
        {
            "personId": person,
            "mergedInto": merged_into,
            "format": FORMAT,
            "state": profile.to_json(),
            "updatedAt": now,
        }
    )
    assert encoded == expected
    decoded_person, decoded_merged, state = decode_state(encoded)
    assert (decoded_person, decoded_merged) == (person, merged_into)
    assert Profile.from_json(state) == profile


def test_change_id_is_stable_and_distinct() -> None:
    a = Change("p", "s", None, True, 1, 0, "event", "r", None, 1)
    assert change_id(a) == change_id(Change("p", "s", None, True, 1, 99, "timer", "other", "m", 2))
    assert change_id(a) != change_id(Change("p", "s", None, False, 2, 0, "event", "r", None, 1))
    assert change_id(a) != change_id(Change("p", "s", "product:x", True, 1, 0, "event", "r", None, 1))


def test_resolved_event_decodes_to_a_segment_event() -> None:
    at = datetime(2026, 11, 1, 18, 30, tzinfo=UTC)
    event = Event.model_validate(
        {
            "messageId": "m-1",
            "type": "track",
            "event": "Order Completed",
            "userId": "u1",
            "traits": {"tier": "gold"},
            "properties": {"revenue": 42.5},
            "context": {
                "channel": "app",
                "timezone": "Europe/London",
                "device": {"type": "ios"},
                "consent": {"categoryPreferences": {"Advertising": False}},
            },
            "lines": [{"ean": "4006381333931", "quantity": 2, "unitPrice": 21.25}],
            "timestamp": at,
            "receivedAt": at,
        }
    )
    value = resolved_event("person-1", ["customer_id:u1"], 5, event_body(EVENT_CODEC.encode(event.to_avro())))
    person, decoded = decode_resolved(value)
    assert person == "person-1"
    assert decoded.name == "Order Completed" and decoded.channel == "app"
    assert decoded.timestamp_ms == int(at.timestamp() * 1000)
    assert decoded.device_type == "ios" and decoded.timezone == "Europe/London"
    assert decoded.traits == {"tier": "gold"} and decoded.properties == {"revenue": 42.5}
    assert decoded.lines[0].ean == "4006381333931" and decoded.lines[0].quantity == 2
    assert decoded.identifiers == ("customer_id:u1",)
    assert decoded.consent == {"Advertising": False}


def test_a_profiles_changes_encode_like_one_at_a_time() -> None:
    profile = Profile("person-1")
    profile.contacts["email"] = ["a@example.com", 1]
    changes = [
        Change("person-1", "vip", None, True, 1, 10, "event", "entered: event 'x'", "m1", 1),
        Change("person-1", "no-shoes", "product:p1", True, 3, 11, "timer", "entered: window", None, 2),
        Change("person-1", "vip", None, False, 2, 12, "merge", "exited: merged", None, 1),
    ]
    assert encode_changes(changes, profile, 7) == [encode_change(c, profile, 7) for c in changes]
    for record, change in zip(encode_changes(changes, profile, 7), changes, strict=True):
        decoded = SEGMENT_CHANGE_CODEC.decode(record)
        assert (decoded["segmentId"], decoded["subject"], decoded["seq"]) == (
            change.segment_id,
            change.subject,
            change.seq,
        )
        assert decoded["contacts"]["email"] == "a@example.com"


@given(
    person=_text,
    subject=_maybe,
    entered=st.booleans(),
    usecases=st.lists(
        st.tuples(_text, st.integers(1, 2**30), st.floats(0.05, 0.5), st.booleans()), max_size=3
    ),
)
def test_changes_carry_the_arms_of_the_running_use_cases_covering_them(
    person: str, subject: str | None, entered: bool, usecases: list[tuple[str, int, float, bool]]
) -> None:
    running = [
        RunningUseCase(uid, version, "seg" if covers else "other", subject, share)
        for uid, version, share, covers in usecases
    ]
    change = Change(person, "seg", subject, entered, 1, 5, "event", "r", None, 1)
    profile = Profile(person)
    (record,) = encode_changes([change], profile, 9, covering(running))
    decoded = SEGMENT_CHANGE_CODEC.decode(record)
    expected = [
        {"usecaseId": u.usecase_id, "version": u.version, "arm": u.arm(person).value}
        for u in running
        if u.covers("seg", subject)
    ]
    assert decoded["usecases"] == expected
    without = SEGMENT_CHANGE_CODEC.decode(encode_changes([change], profile, 9)[0])
    assert without["usecases"] == [] and {k: v for k, v in decoded.items() if k != "usecases"} == {
        k: v for k, v in without.items() if k != "usecases"
    }
