"""Stage steps driven with plain records and no broker: what each emits, refuses and checkpoints."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.domain.events import Event
from streams.domain.identity import IdentityRules
from streams.kafka.stage import Outputs, Record, Step
from streams.settings import Settings
from streams.sinks.identity import IdentitySinkStep
from streams.stages.identity.resolver import ResolveStep
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_LINKS_TOPIC, RESOLVED_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import EVENT_CODEC, IDENTITY_ASSIGNMENT_CODEC, RESOLVED_CODEC

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.")
AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _event(user_id: str, message_id: str) -> bytes:
    call = {"type": "track", "event": "Product Viewed", "userId": user_id, "messageId": message_id}
    event = Event.from_segment(call, channel="web", source="test", received_at=AT)
    return EVENT_CODEC.encode(event.to_avro())


def _resolver(owners: dict[str, str]) -> ResolveStep:
    rules = IdentityRules.from_yaml(SETTINGS.identity_rules_path)
    return ResolveStep(SETTINGS, rules, owners=owners)


def test_a_known_person_is_resolved_and_an_unknown_one_goes_to_the_link_log() -> None:
    web = SETTINGS.channel_topic("web")
    step = _resolver({"customer_id:c1": "p-1"})
    out = Outputs()
    step.process([Record(web, _event("c1", "m1"), offset=0), Record(web, _event("c9", "m2"), offset=1)], out)

    assert [topic for topic, _, _ in out.sends] == [
        SETTINGS.topic(RESOLVED_TOPIC.name),
        SETTINGS.topic(IDENTITY_LINKS_TOPIC.name),
    ]
    _topic, key, value = out.sends[0]
    assert key == b"p-1" and RESOLVED_CODEC.decode(value or b"")["personId"] == "p-1"
    assert out.sends[1][1] == b"m2"  # the link log is keyed by message id
    assert not out.refused
    assert (step.stats.resolved, step.stats.linked) == (1, 1)


def test_undecodable_bytes_are_refused_with_their_position_and_nothing_else_is_lost() -> None:
    web = SETTINGS.channel_topic("web")
    step = _resolver({"customer_id:c1": "p-1"})
    out = Outputs()
    step.process(
        [Record(web, b"garbage", partition=2, offset=7), Record(web, _event("c1", "m1"), offset=8)], out
    )

    assert len(out.refused) == 1 and len(out.sends) == 1
    refused = out.refused[0]
    assert (refused.source, refused.partition, refused.offset, refused.original) == (web, 2, 7, b"garbage")
    assert refused.reason


def test_a_sink_batches_rows_skips_tombstones_and_refuses_garbage() -> None:
    step = IdentitySinkStep(SETTINGS, ClickHouseWriter(SETTINGS))
    assignments = SETTINGS.topic(IDENTITY_ASSIGNMENTS_TOPIC.name)
    record = {
        "identifier": "customer_id:c1",
        "kind": "customer_id",
        "personId": "p-1",
        "version": 1,
        "firstSeen": AT,
        "at": AT,
    }
    good = IDENTITY_ASSIGNMENT_CODEC.encode(record)
    out = Outputs()
    step.process(
        [
            Record(assignments, good, offset=0),
            Record(assignments, None, offset=1),  # a tombstone on the compacted topic
            Record(assignments, b"\x00junk", offset=2),
        ],
        out,
    )

    assert step.stats.tombstones == 1 and step.stats.rejected == 1
    assert [(r.source, r.offset) for r in out.refused] == [(assignments, 2)]
    assert not step.checkpoint_due(0)  # neither full nor past its interval yet
    write = step.checkpoint(out)
    assert write is not None  # the batch's insert, run by the runtime's writer thread
    assert step.checkpoint(out) is None  # nothing new since


def test_every_step_hook_has_a_harmless_default() -> None:
    step = Step()
    out = Outputs()
    step.start()
    step.before_turn(out)
    step.after_turn(0, out)
    step.flush(out)
    step.finish_sealing(out)
    assert step.ready() and not step.stalled() and not step.checkpoint_due(0) and step.checkpoint_due(3)
    assert step.checkpoint(out) is None and not len(out)
