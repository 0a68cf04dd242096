"""The segment stage on the real Tansu broker: enter on events, expire by timer with no new event,
a merge that moves a person into a segment, definitions changed while running, and a restart that
restores state without publishing anything twice."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.domain.events import Event
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from streams.stages.segments.stage import SegmentStage
from streams.wire.codecs import EVENT_CODEC, IDENTITY_CHANGE_CODEC, SEGMENT_CHANGE_CODEC
from streams.wire.identity import event_body, resolved_event
from tests.integration.stages.segments.segment_files import write_definitions

pytestmark = pytest.mark.integration

HOUR_S = 3600.0


class Clock:
    """Wall-clock time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


DEFINITIONS = {
    "recent-buyer.yaml": "id: recent-buyer\nwhen: {event: Order Completed, window: 1h}\n",
    "three-orders.yaml": "id: three-orders\nwhen: {event: Order Completed, count: {gte: 3}}\n",
}


def _resolved(
    person: str, n: int, clock: Clock, name: str = "Order Completed", email: str | None = None
) -> bytes:
    now = datetime.fromtimestamp(clock(), tz=UTC)
    event = Event.model_validate(
        {
            "messageId": f"{person}-{n}",
            "type": "track",
            "event": name,
            "userId": person,
            "context": {"channel": "web"},
            "timestamp": now,
            "receivedAt": now,
            "lines": [{"sku": "SKU-1", "quantity": 1, "unitPrice": 10.0}],
        }
    )
    ids = [f"customer_id:{person}"] + ([f"email:{email}"] if email else [])
    return resolved_event(
        person, ids, int(now.timestamp() * 1000), event_body(EVENT_CODEC.encode(event.to_avro()))
    )


class Changes:
    """Reads segments.changes from the beginning as the test goes."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("segments.changes")
        self.consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}"}
        )
        parts = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        self.seen: list[dict[str, Any]] = []

    def wait(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(500, 0.2):
                if msg.error() is None and msg.value() is not None:
                    self.seen.append(SEGMENT_CHANGE_CODEC.decode(msg.value()))
            if predicate(self.seen):
                return
        raise AssertionError(f"timed out; changes so far: {[_brief(c) for c in self.seen]}")

    def settle(self, seconds: float = 2.0) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            for msg in self.consumer.consume(500, 0.2):
                if msg.error() is None and msg.value() is not None:
                    self.seen.append(SEGMENT_CHANGE_CODEC.decode(msg.value()))

    def of(self, person: str, segment: str | None = None) -> list[tuple[str, str, int, str]]:
        return [
            (c["segmentId"], c["change"], c["seq"], c["trigger"])
            for c in self.seen
            if c["personId"] == person and (segment is None or c["segmentId"] == segment)
        ]


def _brief(change: dict[str, Any]) -> str:
    return (
        f"{change['personId']}/{change['segmentId']}/{change['change']}#{change['seq']}({change['trigger']})"
    )


class Stages:
    """Segment stages in threads; every one is stopped and joined, even when the test fails."""

    def __init__(self) -> None:
        self.threads: dict[int, tuple[SegmentStage, threading.Thread]] = {}
        self.failures: list[BaseException] = []

    def start(self, settings: Settings, clock: Clock) -> SegmentStage:
        stage = SegmentStage(settings, clock=clock)

        def run() -> None:
            try:
                stage.run()
            except BaseException as exc:
                self.failures.append(exc)
                raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.threads[id(stage)] = (stage, thread)
        assert stage.ready.wait(60), f"the segment stage did not get its partitions {self.failures!r}"
        return stage

    def stop(self, stage: SegmentStage) -> None:
        stage.stop()
        _, thread = self.threads.pop(id(stage))
        thread.join(60)
        assert not thread.is_alive(), "the segment stage did not stop"


@pytest.fixture
def stages() -> Iterator[Stages]:
    running = Stages()
    yield running
    for stage, thread in list(running.threads.values()):
        stage.stop()
        thread.join(60)
    assert not running.failures, f"a segment stage crashed: {running.failures!r}"


@pytest.mark.parametrize("home", ["memory", "disk"])
def test_enter_expire_merge_redefine_and_restart(
    settings_factory: Callable[..., Settings],
    stages: Stages,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    home: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        segments_group=f"seg-{suffix}",
        segments_state_flush_s=0.5,
        segments_timer_interval_s=0.1,
        state_dir=tmp_path / "state" if home == "disk" else None,
    )
    definitions = write_definitions(tmp_path / "segments", DEFINITIONS)
    apply_definitions(settings, definitions)
    clock = Clock()
    stage = stages.start(settings, clock)
    producer = Producer(producer_config(settings, "it-segments"))
    resolved = settings.topic("events.resolved")
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    survivor, merged = f"person-s-{suffix}", f"person-m-{suffix}"

    # Enter at once on a purchase; the contact identifiers ride along.
    for n in (1, 2):
        producer.produce(resolved, _resolved(survivor, n, clock, email="s@example.com"), survivor.encode())
    producer.produce(resolved, _resolved(merged, 1, clock), merged.encode())
    producer.flush(10)
    changes.wait(lambda seen: len([c for c in seen if c["segmentId"] == "recent-buyer"]) >= 2)
    entered = [c for c in changes.seen if c["personId"] == survivor]
    assert [(c["segmentId"], c["change"], c["seq"]) for c in entered] == [("recent-buyer", "entered", 1)]
    assert entered[0]["contacts"]["email"] == "s@example.com"
    assert entered[0]["trigger"] == "event" and entered[0]["messageId"] == f"{survivor}-1"

    # The window expires with no new event: only the clock moves.
    clock.offset += HOUR_S + 1
    changes.wait(lambda seen: len([c for c in seen if c["change"] == "exited"]) >= 2)
    assert changes.of(survivor) == [
        ("recent-buyer", "entered", 1, "event"),
        ("recent-buyer", "exited", 2, "timer"),
    ]

    # A merge moves the survivor (2 orders) into three-orders with the merged person's order.
    producer.produce(
        settings.topic("identity.changes"),
        IDENTITY_CHANGE_CODEC.encode(
            {
                "changeId": f"merge-{suffix}",
                "kind": "merged",
                "personId": survivor,
                "mergedPersonId": merged,
                "mergedPersonIds": [merged],
                "identifiers": [],
                "conflictingPersonId": None,
                "reason": None,
                "messageId": "m",
                "channel": "web",
                "at": datetime.now(UTC),
            }
        ),
        survivor.encode(),
    )
    producer.flush(10)
    changes.wait(lambda seen: ("three-orders", "entered", 1, "merge") in changes.of(survivor))
    assert changes.of(merged) == [
        ("recent-buyer", "entered", 1, "event"),
        ("recent-buyer", "exited", 2, "timer"),
    ]

    # A late event with the merged person's id is forwarded to the survivor.
    producer.produce(resolved, _resolved(merged, 2, clock), merged.encode())
    producer.flush(10)
    changes.wait(lambda seen: ("recent-buyer", "entered", 3, "event") in changes.of(survivor))

    # Definitions change while running: a new segment is evaluated from state (trigger definition).
    write_definitions(
        definitions,
        {**DEFINITIONS, "four.yaml": "id: four-orders\nwhen: {event: Order Completed, count: {gte: 4}}\n"},
    )
    apply_definitions(settings, definitions)
    changes.wait(lambda seen: ("four-orders", "entered", 1, "definition") in changes.of(survivor))
    version = next(c for c in changes.seen if c["segmentId"] == "four-orders")["definitionVersion"]
    assert version == 1

    # Restart: state is restored from segments.state; nothing is published twice.
    before = list(changes.seen)
    stages.stop(stage)
    restarted = stages.start(settings, clock)
    producer.produce(resolved, _resolved(survivor, 3, clock), survivor.encode())
    producer.flush(10)
    changes.settle(3.0)
    after = changes.seen[len(before) :]
    assert restarted.stats.events >= 1
    assert all(c["personId"] != merged for c in after), [_brief(c) for c in after]
    assert [(c["segmentId"], c["change"]) for c in after if c["personId"] == survivor] == [], [
        _brief(c) for c in after
    ]
    # Alternation and uniqueness over the whole history.
    by_key: dict[tuple[str, str, str | None], list[int]] = {}
    for change in changes.seen:
        by_key.setdefault((change["personId"], change["segmentId"], change["subject"]), []).append(
            change["seq"]
        )
    for key, seqs in by_key.items():
        assert seqs == list(range(1, len(seqs) + 1)), (key, seqs)
    assert len(restarted.profiles) >= 1 and merged in restarted.merged_into  # restored from segments.state


def test_a_burst_is_saved_and_committed_once_the_input_pauses(
    settings_factory: Callable[..., Settings], stages: Stages, tmp_path: Path
) -> None:
    """With saves due only every minute, a pause in the input still saves and commits what was read."""
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        segments_group=f"seg-idle-{suffix}", segments_state_flush_s=60.0, stage_stall_s=300.0
    )
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    clock = Clock()
    stage = stages.start(settings, clock)
    producer = Producer(producer_config(settings, "it-segments-idle"))
    resolved = settings.topic("events.resolved")
    person = f"person-idle-{suffix}"
    for n in range(1, 6):
        producer.produce(resolved, _resolved(person, n, clock), person.encode())
    producer.flush(10)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.segments_group})
    try:
        parts = consumer.list_topics(resolved, timeout=10).topics[resolved].partitions
        wanted = [TopicPartition(resolved, p) for p in parts]
        deadline = time.monotonic() + 15
        committed = 0
        while time.monotonic() < deadline:
            committed = sum(max(0, tp.offset) for tp in consumer.committed(wanted, timeout=10))
            if committed >= 5:
                break
            time.sleep(0.1)
    finally:
        consumer.close()
    assert committed == 5, f"committed {committed} of 5 offsets within 15 s (the next timed save is in 60 s)"
    assert stage.stats.events == 5 and stage.stats.state_writes >= 1
