"""Revenue through the real identity sink (Tansu broker, ClickHouse 18.16): an Order Completed that
carries only properties.revenue gets that revenue in event_persons, and the warehouse's figures equal the
segment engine's for the same resolved records."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from streams.agents.identity_sink import IdentitySink
from streams.agents.segments_wire import decode_resolved
from streams.dev.stack import clickhouse_client
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.profile import Profile
from streams.settings import Settings
from streams.topics import RESOLVED_TOPIC
from streams.warehouse import kpi
from tests.unit.test_revenue import CALLS, EXPECTED, resolved_record

pytestmark = pytest.mark.integration


def test_identity_sink_writes_the_revenue_segments_count(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(sink_flush_interval_s=0.2)
    records = [resolved_record(number, name, properties) for number, (name, properties) in enumerate(CALLS)]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True})
    for record in records:
        producer.produce(settings.topic(RESOLVED_TOPIC.name), record, b"p1")
    assert producer.flush(30) == 0

    sink = IdentitySink(settings)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            sink.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="revenue-test-sink", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while sink.stats.rows.get("event_persons", 0) < len(records):
            assert time.monotonic() < deadline, "timed out waiting for the resolved events"
            assert not failure, failure
            time.sleep(0.1)
    finally:
        sink.stop()
        thread.join(60)
    assert not thread.is_alive() and not failure, failure

    client = clickhouse_client(settings, settings.clickhouse_database)
    rows = client.execute("SELECT message_id, revenue FROM events_by_person ORDER BY message_id")
    assert rows == [(f"m{number}", revenue) for number, revenue in enumerate(EXPECTED)]
    assert rows[0] == ("m0", 42.0)  # the order that carries only properties.revenue

    engine = SegmentEngine([], timezone="UTC")
    profile = Profile("p1")
    for record in records:
        _, event = decode_resolved(record)
        engine.apply(profile, event, event.timestamp_ms)
    (net,) = [row[5] for row in kpi.run(client, "revenue_by_channel").rows]
    assert net == pytest.approx(profile.revenue) == 92.0
