"""Event.from_segment: Segment-spec calls in, validated events out, clear errors for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.domain.events import Event
from streams.wire.codecs import EVENT_CODEC

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def make(payload: dict[str, Any], channel: str = "web") -> Event:
    return Event.from_segment(payload, channel=channel, source="src", received_at=NOW)  # type: ignore[arg-type]


def test_track_needs_an_event_name() -> None:
    with pytest.raises(ValidationError, match="track call needs an event name"):
        make({"type": "track", "userId": "u1", "messageId": "m"})


def test_missing_identifiers_are_rejected_naming_userid() -> None:
    with pytest.raises(ValidationError, match="no identifier"):
        make({"type": "page", "messageId": "m"})


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        make({"type": "track", "event": "x", "userId": "u", "messageId": "m", "properties": "nope"})
    assert info.value.errors()[0]["loc"] == ("properties",)


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        make({"type": "purchase", "userId": "u", "messageId": "m"})
    assert info.value.errors()[0]["loc"] == ("type",)


def test_numeric_user_id_is_kept_as_text() -> None:
    assert make({"type": "identify", "userId": 12345, "messageId": 7}).userId == "12345"


def test_write_key_channel_wins_over_client_context() -> None:
    event = make({"type": "page", "anonymousId": "a", "messageId": "m", "context": {"channel": "store"}})
    assert event.context.channel == "web"
    assert event.context.source == "src"


def test_email_comes_from_traits_and_products_become_lines() -> None:
    event = make(
        {
            "type": "track",
            "event": "Order Completed",
            "anonymousId": "a",
            "messageId": "m",
            "context": {"traits": {"email": " Ann@Example.com "}},
            "properties": {
                "currency": "EUR",
                "products": [{"product_id": "P1", "price": 9.5, "quantity": 2}],
            },
        },
        channel="app",
    )
    assert event.identifiers.email == " Ann@Example.com "  # normalisation is identity's job
    assert event.lines[0].appProductId == "P1"
    assert event.lines[0].quantity == 2
    assert event.lines[0].currency == "EUR"


def test_store_event_carries_loyalty_card_and_ean_lines() -> None:
    event = make(
        {
            "type": "track",
            "event": "Order Completed",
            "messageId": "m",
            "identifiers": {"loyaltyCard": "LC 0001 2345"},
            "store": {"storeId": "S-12", "transactionId": "T-9"},
            "lines": [{"ean": "4006381333931", "quantity": 1, "unitPrice": 2.99}],
            "timestamp": "2026-11-20T18:30:00+01:00",
        },
        channel="store",
    )
    assert event.partition_key() == b"LC 0001 2345"
    assert event.timestamp == datetime(2026, 11, 20, 17, 30, tzinfo=UTC)


def test_naive_timestamp_is_taken_as_utc() -> None:
    event = make({"type": "page", "anonymousId": "a", "messageId": "m", "timestamp": "2026-01-01T00:00:00"})
    assert event.timestamp.tzinfo is not None


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_out_of_range_in_utc_is_refused_naming_the_field(stamp: str) -> None:
    with pytest.raises(ValidationError, match="out of range in UTC") as info:
        make({"type": "page", "anonymousId": "a", "messageId": "m", "timestamp": stamp})
    assert info.value.errors()[0]["loc"] == ("timestamp",)


_text = st.text(min_size=1, max_size=20)


@given(
    user=st.one_of(st.none(), _text),
    anon=_text,
    props=st.dictionaries(_text, st.one_of(st.integers(), _text, st.booleans(), st.none()), max_size=5),
)
def test_any_valid_call_round_trips_through_avro(user: str | None, anon: str, props: dict[str, Any]) -> None:
    payload = {"type": "track", "event": "E", "userId": user, "anonymousId": anon, "messageId": "m"}
    payload["properties"] = props
    try:
        event = make(payload)
    except ValidationError:
        return  # blank-only ids are refused; that is fine
    assert Event.from_avro(EVENT_CODEC.decode(EVENT_CODEC.encode(event.to_avro()))) == event
