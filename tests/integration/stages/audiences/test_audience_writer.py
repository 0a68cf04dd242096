"""The audience writer on the real broker: deltas exactly as a single-threaded run of the domain, across
a restart that lost its last offset commits; and the whole path from resolved events through the
segment stage, with consent given, withdrawn and given again."""

from __future__ import annotations

import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.domain.audiences.deltas import Delta, fold
from streams.domain.audiences.destinations import load_destinations
from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import (
    AudienceInput,
    AudienceState,
    Configuration,
    MembershipChange,
    PersonRemoved,
    PersonUpdate,
)
from streams.domain.consent import ConsentPolicy, Decision
from streams.domain.events import Event
from streams.kafka.config import producer_config
from streams.kafka.runtime import StageRuntime
from streams.settings import Settings
from streams.stages.audiences.configuration import publish_configuration
from streams.stages.audiences.writer import AudienceWriter
from streams.stages.segments.definitions import apply_definitions
from streams.stages.segments.stage import SegmentStage
from streams.wire.audiences import decode_delta, decode_input, encode_input
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import event_body, resolved_event
from tests.integration.stages.audiences.topic_reading import topic_values
from tests.integration.stages.segments.segment_files import write_definitions

pytestmark = pytest.mark.integration

_DESTINATIONS = f"""
- id: ads
  kind: meta_custom_audience
  api_key_sha256: {"a" * 64}
  identifiers: [email, phone]
  consent: [advertising]
  audiences:
    - segment: buyers
    - segment: bought
      subjects: "product:*"
- id: mail
  kind: google_customer_match
  api_key_sha256: {"b" * 64}
  identifiers: [email]
  consent: [email]
  audiences:
    - segment: buyers
"""


class Running:
    """Stages in threads; every one is stopped and joined, even when the test fails."""

    def __init__(self) -> None:
        self.threads: dict[int, tuple[StageRuntime, threading.Thread]] = {}
        self.failures: list[BaseException] = []

    def start(self, stage: StageRuntime) -> Any:
        def run() -> None:
            try:
                stage.run()
            except BaseException as exc:
                self.failures.append(exc)
                raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads[id(stage)] = (stage, thread)
        assert stage.ready.wait(60), f"{stage.spec.name} did not get its partitions {self.failures!r}"
        return stage

    def stop(self, stage: StageRuntime) -> None:
        stage.stop()
        _, thread = self.threads.pop(id(stage))
        thread.join(60)
        assert not thread.is_alive(), f"{stage.spec.name} did not stop"


@pytest.fixture
def running() -> Iterator[Running]:
    stages = Running()
    yield stages
    for stage, thread in list(stages.threads.values()):
        stage.stop()
        thread.join(60)
    assert not stages.failures, f"a stage crashed: {stages.failures!r}"


class Deltas:
    """Reads audiences.deltas from the beginning as the test goes."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topic("audiences.deltas")
        self.consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}"}
        )
        self.consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        self.seen: list[Delta] = []

    def wait(self, predicate: Callable[[list[Delta]], bool], timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(1000, 0.2):
                if msg.error() is None and msg.value() is not None:
                    self.seen.append(decode_delta(msg.value())[0])
            if predicate(self.seen):
                return
        raise AssertionError(f"timed out with {len(self.seen)} deltas: {self.seen[-5:]}")

    def settle(self, seconds: float = 2.0) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for msg in self.consumer.consume(1000, 0.2):
                if msg.error() is None and msg.value() is not None:
                    self.seen.append(decode_delta(msg.value())[0])

    def audience(self, destination: str, audience: str) -> set[tuple[AudienceIdKind, str]]:
        return fold(
            set(), [d for d in self.seen if (d.destination_id, d.audience_id) == (destination, audience)]
        )


def _configuration() -> Configuration:
    return Configuration(
        tuple(load_destinations([("test.yaml", _DESTINATIONS)])), ConsentPolicy(defaults={"email": True})
    )


def _inputs(count: int, seed: int) -> list[AudienceInput]:
    """A deterministic stream of memberships, identifier and consent changes and merges."""
    rnd = random.Random(seed)
    persons = [f"p{n}" for n in range(40)]
    seqs: dict[tuple[str, str, str | None], int] = {}
    items: list[AudienceInput] = []
    for _ in range(count):
        person = rnd.choice(persons)
        roll = rnd.random()
        if roll < 0.55:
            segment, subject = rnd.choice(
                [("buyers", None), ("bought", "product:1"), ("bought", "product:2")]
            )
            seq = seqs.get((person, segment, subject), 0) + 1
            seqs[(person, segment, subject)] = seq
            items.append(MembershipChange(person, segment, subject, seq))
        elif roll < 0.95:
            identifiers = {AudienceIdKind.EMAIL: (f"{person}.{rnd.randint(0, 2)}@shop.example",)}
            if rnd.random() < 0.5:
                identifiers[AudienceIdKind.PHONE] = (f"+4670{rnd.randint(1000000, 1000005)}",)
            consent = {"advertising": Decision(rnd.random() < 0.7, rnd.randint(0, 10))}
            items.append(PersonUpdate(person, identifiers, consent))
        else:
            items.append(PersonRemoved(person))
            seqs = {k: v for k, v in seqs.items() if k[0] != person}
    return items


def _produce(settings: Settings, items: list[AudienceInput]) -> None:
    producer = Producer(producer_config(settings, "it-audience-inputs"))
    topic = settings.topic("audiences.inputs")
    now = datetime.now(UTC)
    for item in items:
        key = getattr(item, "person_id", "configuration").encode()
        producer.produce(topic, encode_input(item, now), key)
    assert producer.flush(30) == 0


def _reference(items: list[AudienceInput]) -> list[Delta]:
    state = AudienceState()
    return [delta for item in items for delta in state.apply(item)]


def test_deltas_equal_a_single_threaded_run_across_a_restart_that_lost_its_commits(
    settings_factory: Callable[..., Settings], running: Running
) -> None:
    settings = settings_factory(audiences_group=f"aud-{uuid.uuid4().hex[:8]}")
    items = [_configuration(), *_inputs(400, seed=7)]
    first, second = items[:250], items[250:]
    _produce(settings, first)
    deltas = Deltas(settings)
    writer = running.start(AudienceWriter(settings))
    expected_first = _reference(first)
    assert expected_first, "the stream must produce deltas"
    deltas.wait(lambda seen: len(seen) >= len(expected_first))
    running.stop(writer)
    assert deltas.seen == expected_first

    # The crash: the last commits were lost, so the next owner replays inputs 120.. it already applied.
    rewind = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.audiences_group})
    rewind.commit(offsets=[TopicPartition(settings.topic("audiences.inputs"), 0, 120)], asynchronous=False)
    rewind.close()
    _produce(settings, second)
    writer = running.start(AudienceWriter(settings))
    expected = _reference(items)
    deltas.wait(lambda seen: len(seen) >= len(expected))
    deltas.settle(2)
    assert deltas.seen == expected  # nothing lost, nothing published twice
    assert writer.stats.skipped_on_replay > 0
    assert writer.stats.rebuilt_inputs == 120


def _resolved(person: str, n: int, **fields: Any) -> bytes:
    now = datetime.now(UTC)
    event = Event.model_validate(
        {
            "messageId": f"{person}-{n}",
            "type": "track",
            "event": "Order Completed",
            "userId": person,
            "context": {"channel": "web"},
            "timestamp": now,
            "receivedAt": now,
            "lines": [{"sku": "SKU-1", "quantity": 1, "unitPrice": 10.0}],
        }
        | fields
    )
    ids = [f"customer_id:{person}", f"email:{person}@shop.example"]
    return resolved_event(
        person, ids, int(now.timestamp() * 1000), event_body(EVENT_CODEC.encode(event.to_avro()))
    )


def _meta_email(person: str) -> tuple[AudienceIdKind, str]:
    return AudienceIdKind.EMAIL, hashlib.sha256(f"{person}@shop.example".encode()).hexdigest()


def test_consent_given_withdrawn_and_given_again_moves_a_buyer_in_and_out_of_the_audience(
    settings_factory: Callable[..., Settings], running: Running, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        audiences_group=f"aud-{suffix}", segments_group=f"seg-{suffix}", segments_state_flush_s=0.5
    )
    apply_definitions(
        settings,
        write_definitions(
            tmp_path / "segments",
            {"buyers.yaml": "id: buyers\nwhen: {event: Order Completed, count: {gte: 1}}\n"},
        ),
    )
    publish_configuration(settings, _configuration())
    running.start(SegmentStage(settings))
    running.start(AudienceWriter(settings))
    deltas = Deltas(settings)
    producer = Producer(producer_config(settings, "it-audience-path"))
    resolved = settings.topic("events.resolved")
    yes, no = f"yes-{suffix}", f"no-{suffix}"
    granted = {"consent": {"categoryPreferences": {"Advertising": True}}}
    producer.produce(resolved, _resolved(yes, 1, context={"channel": "web"} | granted), yes.encode())
    producer.produce(resolved, _resolved(no, 1), no.encode())
    assert producer.flush(10) == 0
    deltas.wait(lambda _: deltas.audience("ads", "buyers") == {_meta_email(yes)})
    # Email has a default of granted: both buyers are in the mail destination's audience.
    deltas.wait(lambda _: len(deltas.audience("mail", "buyers")) == 2)

    withdrawn = {"consent": {"categoryPreferences": {"Advertising": False}}}
    producer.produce(resolved, _resolved(yes, 2, context={"channel": "web"} | withdrawn), yes.encode())
    producer.produce(
        resolved, _resolved(no, 2, type="identify", traits={"consent": {"advertising": True}}), no.encode()
    )
    assert producer.flush(10) == 0
    deltas.wait(lambda _: deltas.audience("ads", "buyers") == {_meta_email(no)})
    deltas.settle(1)
    removes = [d for d in deltas.seen if d.destination_id == "ads" and not d.added]
    assert [d.hash for d in removes] == [_meta_email(yes)[1]]


def _memberships_on_inputs(settings: Settings) -> list[MembershipChange]:
    """Every membership change on audiences.inputs so far."""
    items = [decode_input(value) for value in topic_values(settings, "audiences.inputs")]
    return [item for item in items if isinstance(item, MembershipChange)]


def test_only_read_segments_are_forwarded_and_a_segment_that_starts_being_read_brings_its_members(
    settings_factory: Callable[..., Settings], running: Running, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        audiences_group=f"aud-{suffix}", segments_group=f"seg-{suffix}", segments_state_flush_s=0.5
    )
    buyers = "id: buyers\nwhen: {event: Order Completed, count: {gte: 1}}\n"
    apply_definitions(
        settings,
        write_definitions(
            tmp_path / "segments",
            {"buyers.yaml": buyers, "shoppers.yaml": buyers.replace("buyers", "shoppers")},
        ),
    )
    publish_configuration(settings, _configuration())  # reads buyers, not shoppers
    running.start(SegmentStage(settings))
    running.start(AudienceWriter(settings))
    deltas = Deltas(settings)
    producer = Producer(producer_config(settings, "it-audience-reads"))
    person = f"p-{suffix}"
    producer.produce(settings.topic("events.resolved"), _resolved(person, 1), person.encode())
    assert producer.flush(10) == 0
    deltas.wait(
        lambda _: deltas.audience("mail", "buyers") == {(AudienceIdKind.EMAIL, _google_email(person))}
    )
    assert {m.segment_id for m in _memberships_on_inputs(settings)} == {"buyers"}, (
        "a segment no destination reads is not forwarded"
    )

    # The mail destination starts reading shoppers: the person's membership goes to the writer now.
    more = _DESTINATIONS.replace(
        "  audiences:\n    - segment: buyers\n",
        "  audiences:\n    - segment: buyers\n    - segment: shoppers\n",
    )
    assert more.count("segment: shoppers") == 2  # both destinations
    publish_configuration(
        settings,
        Configuration(
            tuple(load_destinations([("test.yaml", more)])), ConsentPolicy(defaults={"email": True})
        ),
    )
    deltas.wait(
        lambda _: deltas.audience("mail", "shoppers") == {(AudienceIdKind.EMAIL, _google_email(person))}
    )
    assert [(m.person_id, m.seq) for m in _memberships_on_inputs(settings) if m.segment_id == "shoppers"] == [
        (person, 1)
    ]


def _google_email(person: str) -> str:
    return hashlib.sha256(f"{person}@shop.example".encode()).hexdigest()
