"""Suppression at intake (no Kafka: the list's hashes set directly): a call or record carrying a
suppressed identifier, in any spelling that normalises to it, is dropped and counted; others pass."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from streams.api.intake import Intake
from streams.domain.events import Event
from streams.domain.privacy import suppressed, suppression_key
from streams.privacy.suppressions import SuppressionList
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import EVENT_DECODER

KEY = "wk_suppress_web_01"
NOW = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(topic_prefix="p.", sources={KEY: Source(name="web", channel="web")})


def _suppressing(*identifier_keys: str) -> SuppressionList:
    suppressions = SuppressionList(SETTINGS)
    suppressions.keys = {suppression_key(key) for key in identifier_keys}
    return suppressions


def _record(**call: object) -> bytes:
    payload = {"type": "track", "event": "Viewed", "messageId": "m1", **call}
    event = Event.from_segment(payload, channel="web", source="web", received_at=NOW, call_type="track")
    return EVENT_CODEC.encode(event.to_avro())


def test_the_key_is_a_sha256_of_the_normalised_identifier_and_never_the_identifier() -> None:
    key = suppression_key("email:ann@shop.com")
    assert len(key) == 64 and "ann" not in key
    assert suppressed(["anonymous_id:x", "email:ann@shop.com"], {key})
    assert not suppressed(["email:bob@shop.com"], {key})
    assert not suppressed(["email:ann@shop.com"], set())


def test_records_carrying_a_suppressed_identifier_in_any_spelling_are_dropped_and_counted() -> None:
    suppressions = _suppressing("email:ann@shop.com", "anonymous_id:cookie-1")
    assert suppressions.blocks_record(_record(userId="u1", context={"traits": {"email": "  ANN@Shop.com "}}))
    assert suppressions.blocks_record(_record(anonymousId="cookie-1"))
    assert suppressions.blocks_row(EVENT_DECODER.decode(_record(anonymousId="cookie-1", userId="new")))
    assert not suppressions.blocks_record(_record(anonymousId="cookie-2", userId="bob"))
    assert suppressions.dropped == 3


def test_nothing_is_checked_while_nothing_is_suppressed() -> None:
    suppressions = SuppressionList(SETTINGS)
    assert not suppressions.blocks_record(b"not even an event")  # no decode at all
    assert suppressions.dropped == 0


def test_the_collector_accepts_and_drops_suppressed_calls_in_single_calls_and_batches() -> None:
    intake = Intake(SETTINGS)
    intake.suppressions = _suppressing("email:ann@shop.com")
    source = intake.authenticate(KEY, None).source
    assert (
        intake.single({"userId": "u1", "traits": {"email": "ann@shop.com"}}, "identify", source, NOW) is None
    )
    kept = intake.single({"userId": "u2", "traits": {"email": "bob@shop.com"}}, "identify", source, NOW)
    assert kept is not None
    items = [
        {
            "type": "track",
            "event": "A",
            "anonymousId": "c1",
            "context": {"traits": {"email": "Ann@shop.com"}},
        },
        {"type": "track", "event": "B", "anonymousId": "c2"},
        {"type": "teleport", "anonymousId": "c3"},
    ]
    body = {"batch": items}
    outcome = intake.batch(body, source, NOW, len(orjson.dumps(body)))
    assert outcome.accepted == 2  # the suppressed call counts as accepted: the sender must not retry it
    assert [record.topic for record in outcome.records] == ["p.events.web", "p.events.invalid"]
    assert intake.suppressions.dropped == 2
