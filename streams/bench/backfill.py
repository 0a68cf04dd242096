"""Benchmark: backfill a new 30-day segment over N events in ClickHouse 18.16 (docs/benchmarks).

    python -m streams.bench.backfill --events 10000000 --persons 1000000

Starts its own Tansu broker and ClickHouse server in a temporary directory (stopped by pid at the end,
also on failure), fills ``events`` and ``event_persons`` with N events of P persons inside the last 29
days (INSERT ... SELECT FROM numbers(), so the fill is not what is measured), publishes one segment
with new behaviour features, and times ``BackfillJob.run``: history read page by page, each person's
entries computed and sent as backfill parts on ``segments.forward``. The cut is fixed past every row
(the rows were written without their events.resolved records). With ``--apply``, a segment stage then
applies every part (one profile per person) and that is timed too.

Event mix: 50% Product Viewed, 20% Product Added, 10% Order Completed, 20% page. The segment reads
Product Viewed (count, and count on mobile devices: a filter, so those events are built and matched),
Product Added (count) and page (count) within 30 days: 90% of the events.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

from streams.dev import servers
from streams.dev.process import free_port
from streams.dev.stack import apply_migrations, clickhouse_client, create_topics
from streams.settings import Settings
from streams.stages.segments.backfill import BackfillJob
from streams.stages.segments.definitions import apply_definitions
from streams.stages.segments.stage import SegmentStage

SEGMENT = """id: browsers-30d
name: Browsing in the last 30 days
when:
  any:
    - {event: Product Viewed, window: 30d, count: {gte: 3}}
    - {event: Product Added, window: 30d, count: {gte: 1}}
    - {event: page, window: 30d, count: {gte: 10}}
    - {event: Product Viewed, device_type: [mobile], window: 30d, count: {gte: 5}}
"""

_FILL_EVENTS = """
INSERT INTO events (message_id, type, channel, event, timestamp, timestamp_ms, properties, device_type,
    line_sku, line_ean, line_app_product_id, line_quantity, line_unit_price)
SELECT
    concat('m', toString(number)) AS message_id,
    if(kind = 'page', 'page', 'track') AS type,
    'web' AS channel,
    if(kind = 'page', '', kind) AS event,
    toDateTime(%(now_s)s - intDiv(number * 7919, 13) %% (29 * 86400)) AS timestamp,
    toUInt64(timestamp) * 1000 AS timestamp_ms,
    '{"product_id": "p1", "price": 12.5}' AS properties,
    'mobile' AS device_type,
    if(kind = 'Order Completed', ['SKU-1'], emptyArrayString()) AS line_sku,
    if(kind = 'Order Completed', [''], emptyArrayString()) AS line_ean,
    if(kind = 'Order Completed', [''], emptyArrayString()) AS line_app_product_id,
    if(kind = 'Order Completed', [1.0], emptyArrayFloat64()) AS line_quantity,
    arrayMap(q -> CAST(q * 10.0 AS Nullable(Float64)), line_quantity) AS line_unit_price
FROM
(
    SELECT number, arrayElement(['Product Viewed', 'Product Viewed', 'Product Viewed', 'Product Viewed',
        'Product Viewed', 'Product Added', 'Product Added', 'Order Completed', 'page', 'page'],
        number %% 10 + 1) AS kind
    FROM numbers(%(events)s)
)
"""

_FILL_PERSONS = """
INSERT INTO event_persons (message_id, channel, type, event, person_id, timestamp, timestamp_ms,
    kafka_partition, kafka_offset)
SELECT message_id, channel, type, event,
    concat('person-', toString(cityHash64(message_id) %% %(persons)s)) AS person_id,
    timestamp, timestamp_ms, 0, toUInt64(substring(message_id, 2))
FROM events
"""


def apply_parts(settings: Settings, parts: int) -> None:
    """A segment stage applies every part sent: parts/s and the changes they cause."""
    stage = SegmentStage(settings)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            stage.run()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        assert stage.ready.wait(120), f"the segment stage did not start: {failures!r}"
        ready = time.monotonic()
        while stage.stats.backfill_parts < parts:
            assert not failures, failures
            time.sleep(0.2)
        took = time.monotonic() - ready
        print(
            f"RESULT applied parts={stage.stats.backfill_parts} changes={stage.stats.changes} "
            f"seconds={took:.1f} (start {ready - started:.1f}s) parts_per_s={parts / took:.0f}"
        )
    finally:
        stage.stop()
        thread.join(60)


def run(events: int, persons: int, page_rows: int, apply: bool) -> None:
    state = Path(tempfile.mkdtemp(prefix="omniseg-bench-backfill-"))
    kafka_port, ch_port, ch_http = free_port(), free_port(), free_port()
    kafka, clickhouse = servers.tansu(state, kafka_port), servers.clickhouse(state, ch_port, ch_http)
    try:
        kafka.start(timeout_s=60)
        clickhouse.start(timeout_s=60)
        settings = Settings(
            kafka_bootstrap=f"127.0.0.1:{kafka_port}",
            clickhouse_host="127.0.0.1",
            clickhouse_port=ch_port,
            clickhouse_database="bench_backfill",
            topic_prefix="bench.",
        )
        create_topics(settings)
        apply_migrations(settings, report=lambda _line: None)
        client = clickhouse_client(settings, settings.clickhouse_database)
        started = time.monotonic()
        client.execute(_FILL_EVENTS, {"now_s": int(time.time()), "events": events})
        client.execute(_FILL_PERSONS, {"persons": persons})
        stored = client.execute("SELECT count() FROM events")[0][0]
        print(f"filled {stored:,} events of up to {persons:,} persons in {time.monotonic() - started:.1f}s")
        definitions = state / "segments"
        definitions.mkdir()
        (definitions / "browsers.yaml").write_text(SEGMENT)
        apply_definitions(settings, definitions)
        job = BackfillJob(settings, progress=print, settle_s=0, cut=(2**62,) * 64, page_rows=page_rows)
        result = job.run(segment_ids=["browsers-30d"])
        assert result is not None
        print(
            f"RESULT events_in_table={stored} events_read={result.events_read} persons={result.persons} "
            f"entries={result.entries} parts={result.parts_sent} pages={result.pages} "
            f"seconds={result.seconds:.1f} events_per_s={result.rate():.0f} "
            f"table_events_per_s={stored / result.seconds:.0f}"
        )
        if apply:
            apply_parts(settings, result.parts_sent)
    finally:
        clickhouse.stop()
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--page-rows", type=int, default=1_000_000)
    parser.add_argument("--apply", action="store_true", help="then time a segment stage applying the parts")
    args = parser.parse_args()
    run(args.events, args.persons, args.page_rows, args.apply)


if __name__ == "__main__":
    main()
