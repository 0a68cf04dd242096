"""Intake: how a batch splits into channel records and events.invalid records (pure, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from streams.api.intake import CollectorError, Intake, describe_validation_error, write_key_from_header
from streams.domain.events import Event
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC, INVALID_CODEC

KEY = "wk_intake_app_01"
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def intake() -> Intake:
    settings = Settings(
        topic_prefix="p.", sources={KEY: Source(name="app-ios", channel="app")}, max_event_bytes=1024
    )
    return Intake(settings)


def test_mixed_batch_keeps_valid_and_routes_invalid_with_reasons(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    items = [
        {"type": "track", "userId": "u1", "event": "Opened", "messageId": "a"},
        {"type": "teleport", "userId": "u2", "messageId": "b"},
        {"type": "identify", "messageId": "c"},
        {"type": "screen", "anonymousId": "anon-3", "name": "Home", "messageId": "d"},
        "not an object",
        {"userId": "u5", "event": "x"},
        {"type": "track", "userId": "u6", "event": "Big", "properties": {"blob": "z" * 2000}},
    ]
    body = {"batch": items}
    outcome = intake.batch(body, source, NOW, len(orjson.dumps(body)))
    assert outcome.accepted == 2
    assert [r.index for r in outcome.rejections] == [1, 2, 4, 5, 6]
    reasons = {r.index: r for r in outcome.rejections}
    assert reasons[1].field == "type" and "unknown call type 'teleport'" in reasons[1].reason
    assert reasons[2].field == "userId" and reasons[2].reason.startswith("userId: no identifier")
    assert "expected a JSON object, got str" in reasons[4].reason
    assert reasons[5].field == "type" and "missing call type" in reasons[5].reason
    assert "over the limit of 1024 bytes" in reasons[6].reason

    valid = [r for r in outcome.records if r.topic == "p.events.app"]
    invalid = [r for r in outcome.records if r.topic == "p.events.invalid"]
    assert len(valid) == 2 and len(invalid) == 5
    events = [Event.from_avro(EVENT_CODEC.decode(r.value)) for r in valid]
    assert [(e.messageId, e.type, e.context.channel, e.context.source) for e in events] == [
        ("a", "track", "app", "app-ios"),
        ("d", "screen", "app", "app-ios"),
    ]
    assert [r.key for r in valid] == [b"u1", b"anon-3"]
    assert all(e.receivedAt == NOW for e in events)

    decoded = [INVALID_CODEC.decode(r.value) for r in invalid]
    assert [d["position"] for d in decoded] == ["1", "2", "4", "5", "6"]
    assert all(d["stage"] == "collector" and d["source"] == "app-ios" for d in decoded)
    assert orjson.loads(decoded[0]["original"]) == items[1]
    assert orjson.loads(decoded[2]["original"]) == "not an object"
    assert decoded[1]["field"] == "userId"
    assert all(r.key == b"app-ios" for r in invalid)


def test_batch_context_and_sent_at_apply_to_every_call(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    body = {
        "batch": [
            {"type": "track", "userId": "u1", "event": "A", "messageId": "1"},
            {"type": "track", "userId": "u1", "event": "B", "messageId": "2", "context": {"ip": "10.0.0.2"}},
        ],
        "context": {"ip": "10.0.0.1", "locale": "de-DE"},
        "sentAt": "2024-05-01T11:59:59Z",
    }
    outcome = intake.batch(body, source, NOW, 100)
    events = [Event.from_avro(EVENT_CODEC.decode(r.value)) for r in outcome.records]
    assert [(e.context.ip, e.context.locale) for e in events] == [
        ("10.0.0.1", "de-DE"),
        ("10.0.0.2", "de-DE"),
    ]
    assert all(e.sentAt == datetime(2024, 5, 1, 11, 59, 59, tzinfo=UTC) for e in events)


def test_missing_message_id_gets_a_generated_one(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    record = intake.single({"userId": "u1"}, "identify", source, NOW)
    event = Event.from_avro(EVENT_CODEC.decode(record.value))
    assert len(event.messageId) == 36 and event.type == "identify"


def test_single_call_type_comes_from_the_path(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    record = intake.single({"type": "track", "userId": "u1", "name": "Home"}, "page", source, NOW)
    assert Event.from_avro(EVENT_CODEC.decode(record.value)).type == "page"


def test_client_cannot_claim_another_channel(intake: Intake) -> None:
    source = intake.authenticate(KEY, None).source
    payload = {"userId": "u1", "event": "x", "context": {"channel": "store", "source": "pos"}}
    record = intake.single(payload, "track", source, NOW)
    event = Event.from_avro(EVENT_CODEC.decode(record.value))
    assert (event.context.channel, event.context.source) == ("app", "app-ios")


def test_write_key_header_parsing() -> None:
    assert write_key_from_header(None) is None
    assert write_key_from_header("Basic d2tfYWJjOg==") == "wk_abc"
    with pytest.raises(CollectorError) as caught:
        write_key_from_header("Digest x")
    assert caught.value.status == 401


def test_body_write_key_must_be_a_known_string(intake: Intake) -> None:
    with pytest.raises(CollectorError) as caught:
        intake.authenticate(None, {"writeKey": 12345678})
    assert caught.value.status == 401
    assert intake.authenticate(None, {"writeKey": KEY}).source.name == "app-ios"


def test_validation_error_description_names_each_field() -> None:
    with pytest.raises(ValidationError) as caught:
        Event.from_segment(
            {"messageId": "m", "userId": "u", "event": "e", "properties": 3, "traits": "t"},
            channel="web",
            source="s",
            received_at=NOW,
            call_type="track",
        )
    field, message = describe_validation_error(caught.value)
    assert field == "traits" or field == "properties"
    assert "properties: Input should be a valid dictionary" in message
    assert "traits: Input should be a valid dictionary" in message
