"""What the collector and the importer do with a call's clock, numbers and identifiers (pure, no Kafka):
skewed clocks corrected, impossible times refused, big integers kept exact, identifiers from traits and
the identifiers object both used, a malformed advertising id refused rather than dropped later."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.api.intake import CollectorError, Intake, describe_validation_error, parse_json
from streams.domain.events import Event, loads_json
from streams.domain.identifiers import NormalisationRules, extract
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC, INVALID_CODEC

KEY = "wk_rules_web_001"
NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"


@pytest.fixture
def intake() -> Intake:
    return Intake(Settings(topic_prefix="p.", sources={KEY: Source(name="shop", channel="web")}))


def event(payload: dict[str, Any], *, correct_clock: bool = True) -> Event:
    call = {"type": "track", "event": "Viewed", "messageId": "m-1", **payload}
    return Event.from_segment(
        call, channel="web", source="shop", received_at=NOW, correct_clock=correct_clock
    )


def refusal(payload: dict[str, Any], *, correct_clock: bool = True) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as caught:
        event(payload, correct_clock=correct_clock)
    return describe_validation_error(caught.value)


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# -- clock skew (point 6) --------------------------------------------------------------------------


def test_a_browser_two_hours_slow_lands_when_it_happened_and_keeps_its_reading() -> None:
    slow = timedelta(hours=2)
    happened = NOW - timedelta(minutes=5)
    landed = event({"userId": "u1", "timestamp": iso(happened - slow), "sentAt": iso(NOW - slow)})
    assert landed.timestamp == happened
    assert landed.originalTimestamp == happened - slow
    record = Event.from_avro(EVENT_CODEC.decode(EVENT_CODEC.encode(landed.to_avro())))
    assert (record.timestamp, record.originalTimestamp) == (happened, happened - slow)


def test_an_accurate_clock_and_an_import_keep_the_timestamp_as_sent() -> None:
    stamped = NOW - timedelta(days=30)
    accurate = event({"userId": "u1", "timestamp": iso(stamped), "sentAt": iso(NOW - timedelta(seconds=0.4))})
    assert accurate.timestamp == stamped == accurate.originalTimestamp
    # An exported sentAt is when the row was first sent: imports are never corrected.
    imported = event({"userId": "u1", "timestamp": iso(stamped), "sentAt": iso(stamped)}, correct_clock=False)
    assert imported.timestamp == stamped


def test_without_a_timestamp_the_event_time_is_receipt_and_there_is_no_original() -> None:
    landed = event({"userId": "u1"})
    assert (landed.timestamp, landed.originalTimestamp) == (NOW, None)


def test_a_segment_export_keeps_its_corrected_timestamp_and_its_original() -> None:
    original, corrected = NOW - timedelta(days=2, hours=3), NOW - timedelta(days=2)
    landed = event(
        {"userId": "u1", "timestamp": iso(corrected), "originalTimestamp": iso(original)},
        correct_clock=False,
    )
    assert (landed.timestamp, landed.originalTimestamp) == (corrected, original)


def test_batch_sent_at_corrects_every_item(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    fast = timedelta(hours=3)
    items = [
        {
            "type": "page",
            "anonymousId": "a1",
            "messageId": f"p{n}",
            "timestamp": iso(NOW + fast - timedelta(minutes=n)),
        }
        for n in (1, 2)
    ]
    body = {"batch": items, "sentAt": iso(NOW + fast)}
    outcome = intake.batch(body, source, NOW, len(orjson.dumps(body)))
    events = [Event.from_avro(EVENT_CODEC.decode(r.value)) for r in outcome.records]
    assert [e.timestamp for e in events] == [NOW - timedelta(minutes=1), NOW - timedelta(minutes=2)]


# -- far-future and pre-1970 times (point 7) -------------------------------------------------------


@pytest.mark.parametrize("stamp", ["2200-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z"])
def test_a_time_clickhouse_cannot_hold_is_refused_naming_timestamp(stamp: str) -> None:
    field, reason = refusal({"userId": "u1", "timestamp": stamp, "sentAt": iso(NOW)})
    assert field == "timestamp"
    assert reason.startswith(f"timestamp: {stamp[:19]}")


def test_more_than_a_day_ahead_of_receipt_is_refused_a_day_is_not() -> None:
    assert event({"userId": "u1", "timestamp": iso(NOW + timedelta(hours=23))}).timestamp > NOW
    field, reason = refusal({"userId": "u1", "timestamp": iso(NOW + timedelta(hours=25))})
    assert field == "timestamp" and "more than 24 hours after the call was received" in reason
    # An import is bounded by its own receipt too.
    field, _ = refusal({"userId": "u1", "timestamp": "2200-01-01T00:00:00Z"}, correct_clock=False)
    assert field == "timestamp"


def test_a_far_future_clock_that_is_consistently_wrong_is_corrected_not_refused() -> None:
    ahead = datetime(2200, 1, 1, tzinfo=UTC) - NOW
    landed = event(
        {"userId": "u1", "timestamp": iso(NOW + ahead - timedelta(minutes=1)), "sentAt": iso(NOW + ahead)}
    )
    assert landed.timestamp == NOW - timedelta(minutes=1)


def test_a_refused_batch_item_goes_to_events_invalid_with_its_reason(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    items = [
        {"type": "track", "event": "Viewed", "userId": "u1", "messageId": "ok"},
        {
            "type": "track",
            "event": "Viewed",
            "userId": "u1",
            "messageId": "future",
            "timestamp": "2200-01-01T00:00:00Z",
        },
    ]
    outcome = intake.batch({"batch": items}, source, NOW, 0)
    assert outcome.accepted == 1
    (rejection,) = outcome.rejections
    assert (rejection.index, rejection.field) == (1, "timestamp")
    invalid = INVALID_CODEC.decode(outcome.records[1].value)
    assert invalid["field"] == "timestamp" and "2200-01-01" in invalid["reason"]
    assert orjson.loads(invalid["original"])["messageId"] == "future"


def test_a_refused_single_call_is_kept_for_events_invalid(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    call = {"userId": "u1", "event": "Viewed", "messageId": "future", "timestamp": "2200-01-01T00:00:00Z"}
    with pytest.raises(CollectorError) as caught:
        intake.single(call, "track", source, NOW)
    assert caught.value.status == 400 and caught.value.field == "timestamp"
    assert caught.value.kept is not None and caught.value.kept.topic == "p.events.invalid"
    kept = INVALID_CODEC.decode(caught.value.kept.value)
    assert kept["field"] == "timestamp" and orjson.loads(kept["original"]) == call


# -- integers beyond 64 bits (point 9) -------------------------------------------------------------


@given(st.integers(min_value=-(10**40), max_value=10**40))
@example(-(2**63) - 1)  # 19 digits, below int64
@example(2**64)
def test_every_integer_is_parsed_exactly(number: int) -> None:
    text = f'{{"userId": {number}, "properties": {{"n": {number}, "s": "{number}"}}}}'.encode()
    assert loads_json(text) == json.loads(text)
    assert loads_json(text)["userId"] == number


def test_a_30_digit_user_id_keeps_every_digit_through_the_collector(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    digits = "123456789012345678901234567890"
    body = f'{{"batch": [{{"type": "identify", "userId": {digits}, "messageId": "big", '
    body += f'"traits": {{"loyaltyPoints": {digits}1}}}}]}}'
    data = parse_json(body.encode())
    outcome = intake.batch(data, source, NOW, len(body))
    landed = Event.from_avro(EVENT_CODEC.decode(outcome.records[0].value))
    assert landed.userId == digits
    assert landed.traits == {"loyaltyPoints": int(digits + "1")}
    assert outcome.records[0].key == digits.encode()


def test_an_id_sent_as_a_float_too_large_to_be_exact_is_refused() -> None:
    field, reason = refusal({"userId": 1.2345678901234568e29})
    assert field == "userId" and "send the id as a string" in reason
    assert event({"userId": 42.0}).userId == "42"
    assert event({"userId": 9007199254740991}).userId == "9007199254740991"


# -- identifiers from traits beside the identifiers object (point 10) -----------------------------


def test_traits_email_and_the_identifiers_object_are_both_used() -> None:
    landed = event(
        {"userId": "u1", "identifiers": {"loyaltyCard": "LC-1"}, "traits": {"email": "ann@example.com"}}
    )
    assert (landed.identifiers.loyaltyCard, landed.identifiers.email) == ("LC-1", "ann@example.com")
    kinds = {identifier.kind.value for identifier in extract(landed, NormalisationRules()).identifiers}
    assert {"email", "loyalty_card", "customer_id"} <= kinds
    from_context = event(
        {"userId": "u1", "identifiers": {"crmId": "C1"}, "context": {"traits": {"phone": "+44 20 7946 0958"}}}
    )
    assert from_context.identifiers.phone == "+44 20 7946 0958"


def test_the_same_identifier_written_differently_is_not_a_conflict() -> None:
    landed = event(
        {"userId": "u1", "identifiers": {"email": "Ann@Example.com"}, "traits": {"email": " ann@example.com"}}
    )
    assert landed.identifiers.email == "Ann@Example.com"
    phone = event(
        {"userId": "u1", "identifiers": {"phone": "+44 20 7946 0958"}, "traits": {"phone": "020 7946 0958"}}
    )
    assert phone.identifiers.phone == "+44 20 7946 0958"


def test_two_different_emails_in_one_call_are_refused_naming_the_trait() -> None:
    field, reason = refusal(
        {"userId": "u1", "identifiers": {"email": "ann@example.com"}, "traits": {"email": "bob@example.com"}}
    )
    assert field == "traits.email" and "differs from identifiers.email" in reason
    field, _ = refusal(
        {
            "userId": "u1",
            "identifiers": {"email": "ann@example.com"},
            "context": {"traits": {"email": "bob@example.com"}},
        }
    )
    assert field == "context.traits.email"


# -- advertising ids (point 11) --------------------------------------------------------------------


def test_a_non_uuid_advertising_id_is_refused_naming_the_field() -> None:
    field, reason = refusal({"userId": "u1", "context": {"device": {"advertisingId": "not-a-uuid"}}})
    assert field == "context.device.advertisingId" and "not a UUID" in reason


def test_a_uuid_advertising_id_or_none_at_all_is_accepted() -> None:
    landed = event({"userId": "u1", "context": {"device": {"advertisingId": IDFA.upper()}}})
    assert landed.context.device is not None and landed.context.device.advertisingId == IDFA.upper()
    blank = event({"userId": "u1", "context": {"device": {"id": "d1", "advertisingId": " "}}})
    assert blank.context.device is not None and blank.context.device.id == "d1"
