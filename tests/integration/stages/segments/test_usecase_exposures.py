"""A running use case through the segment stage and the segments sink, on the real broker and ClickHouse:
the changes of its audience carry each person's arm on segments.changes, and every entry is recorded as
an exposure with that arm; other segments' changes carry none."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.dev.stack import clickhouse_client
from streams.domain.audiences.state import Configuration
from streams.domain.consent import ConsentPolicy
from streams.domain.experiments.assignment import RunningUseCase
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.sinks.segments import SegmentsSink
from streams.stages.audiences.configuration import publish_configuration
from streams.stages.segments.definitions import apply_definitions
from streams.stages.segments.stage import SegmentStage
from streams.wire.codecs import SEGMENT_CHANGE_CODEC
from tests.integration.stages.audiences.test_audience_writer import (  # noqa: F401 (running: a fixture)
    Running,
    _resolved,
    running,
)
from tests.integration.stages.segments.segment_files import write_definitions

pytestmark = pytest.mark.integration

USECASE = RunningUseCase("buyer-thanks", 3, "buyers", None, 0.4)


def _changes(settings: Settings, count: int, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The first ``count`` records of segments.changes, from all its partitions."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}"})
    topic = settings.topic("segments.changes")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka_partitions)])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None and msg.value():
                    found.append(SEGMENT_CHANGE_CODEC.decode(msg.value()))
    finally:
        consumer.close()
    return found


def test_the_audiences_changes_carry_arms_and_entries_are_exposures(
    settings_factory: Callable[..., Settings],
    running: Running,  # noqa: F811
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(segments_group=f"seg-{suffix}", segments_state_flush_s=0.5)
    apply_definitions(
        settings,
        write_definitions(
            tmp_path / "segments",
            {
                "buyers.yaml": "id: buyers\nwhen: {event: Order Completed, count: {gte: 1}}\n",
                "big.yaml": "id: big-buyers\nwhen: {event: Order Completed, count: {gte: 2}}\n",
            },
        ),
    )
    publish_configuration(settings, Configuration((), ConsentPolicy(), (USECASE,)))
    running.start(SegmentStage(settings))
    running.start(SegmentsSink(settings))
    producer = Producer(producer_config(settings, "it-usecase-exposures"))
    resolved = settings.topic("events.resolved")
    persons = [f"p{n}-{suffix}" for n in range(24)]
    for person in persons:
        for n in (1, 2):
            producer.produce(resolved, _resolved(person, n), person.encode())
    assert producer.flush(10) == 0

    expected = {person: USECASE.arm(person).value for person in persons}
    assert set(expected.values()) == {"control", "treatment"}
    changes = _changes(settings, 2 * len(persons))
    buyers = [c for c in changes if c["segmentId"] == "buyers"]
    others = [c for c in changes if c["segmentId"] == "big-buyers"]
    assert len(buyers) == len(persons) and len(others) == len(persons)
    for change in buyers:
        assert change["usecases"] == [
            {"usecaseId": "buyer-thanks", "version": 3, "arm": expected[change["personId"]]}
        ]
    assert all(change["usecases"] == [] for change in others)

    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        deadline = time.monotonic() + 60
        rows: list[tuple[str, str, int, str]] = []
        while time.monotonic() < deadline:
            rows = client.execute(
                "SELECT person_id, toString(arm), version, segment_id FROM usecase_exposures FINAL "
                "WHERE usecase_id = 'buyer-thanks' ORDER BY person_id"
            )
            if len(rows) >= len(persons):
                break
            time.sleep(0.5)
    finally:
        client.disconnect()
    assert {person: arm for person, arm, _, _ in rows} == expected
    assert len(rows) == len(persons) and {(v, s) for _, _, v, s in rows} == {(3, "buyers")}
