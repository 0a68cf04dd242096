"""`omniseg bench import`: how fast a POS export goes into Kafka, and how fast the importer alone is.

Generates a POS export (:mod:`streams.bench.pos_rows`: orders of one to five basket lines, one bad order
in 500), then

1. reads and encodes every event without a broker (the importer's own ceiling), and
2. imports the file into fresh topics (its own topic prefix) on the configured broker, the way
   ``omniseg import`` does, and checks that the topics hold exactly the records produced.

Rates are given per CSV line (what a POS export counts) and per event (one per order).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.bench.measure import Report, cpu_seconds, dev_servers
from streams.bench.pos_rows import write_pos_csv
from streams.dev.stack import create_topics
from streams.settings import Settings
from streams.sources.importer import Importer, ImportSummary, RecordWriter, open_rows
from streams.topics import INVALID_TOPIC


def _encode_only(path: Path, settings: Settings) -> tuple[float, float, ImportSummary]:
    rows, handle = open_rows(path, "csv")
    writer = RecordWriter(
        "store",
        path.name,
        settings.channel_topic("store"),
        settings.topic(INVALID_TOPIC.name),
        datetime.now(UTC),
    )
    summary = ImportSummary()
    started, cpu = time.perf_counter(), time.process_time()
    with handle:
        for row in rows:
            writer.record(row, summary)
            summary.rows += 1
    return time.perf_counter() - started, time.process_time() - cpu, summary


def _records_on(settings: Settings, topics: list[str], expected: int, timeout_s: float = 60.0) -> int:
    """How many records the topics hold, read from the beginning (Tansu's high watermarks lag behind the
    last batch, so they cannot be summed); stops once ``expected`` are read and 2 s bring no more."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        assignment = []
        for topic in topics:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
        consumer.assign(assignment)
        total = 0
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            messages = consumer.consume(10_000, 0.2)
            if messages:
                quiet_since = time.monotonic()
            for message in messages:
                if message.error():
                    raise RuntimeError(f"reading back the import failed: {message.error()}")
                total += 1
            if total >= expected and time.monotonic() - quiet_since > 2.0:
                break
        return total
    finally:
        consumer.close()


def _rates(lines: int, summary: ImportSummary, seconds: float, cpu: float) -> dict[str, Any]:
    """Rates per wall second, and per CPU second of the importer (steadier on a shared machine)."""
    return {
        "seconds": round(seconds, 2),
        "lines_per_s": round(lines / seconds),
        "events_per_s": round(summary.rows / seconds),
        "importer_cpu_s": round(cpu, 2),
        "lines_per_cpu_s": round(lines / cpu) if cpu > 0 else None,
        "events_per_cpu_s": round(summary.rows / cpu) if cpu > 0 else None,
    }


def run_import_bench(
    settings: Settings,
    lines: int,
    report: Report,
    *,
    broker_pid: int | None = None,
    keep_file: Path | None = None,
) -> dict[str, Any]:
    """Encode-only and import rates for a generated POS export of about ``lines`` lines."""
    run = uuid.uuid4().hex[:8]
    bench = settings.model_copy(update={"topic_prefix": f"bench-import-{run}."})
    with tempfile.TemporaryDirectory(prefix="omniseg-bench-import-") as tmp:
        path = keep_file or Path(tmp) / "pos_export.csv"
        written, orders = write_pos_csv(path, lines)
        size_mb = path.stat().st_size / 1e6
        report(f"generated {written:,} POS lines ({orders:,} orders, {size_mb:.1f} MB) in {path}")

        seconds, cpu, encoded = _encode_only(path, bench)
        encode = _rates(written, encoded, seconds, cpu)
        report(
            f"encode only (no broker): {encode['lines_per_s']:,} lines/s, "
            f"{encode['events_per_s']:,} events/s "
            f"({encoded.events:,} events, {encoded.invalid:,} invalid, {seconds:.1f} s; "
            f"per importer CPU-second: {encode['lines_per_cpu_s']:,} lines, "
            f"{encode['events_per_cpu_s']:,} events)"
        )

        create_topics(bench)
        importer = Importer(bench, "store", path.name)
        importer.check_broker()
        broker = broker_pid or dev_servers(settings).get("broker (Tansu)")
        rows, handle = open_rows(path, "csv")
        cpu_before = cpu_seconds(broker) if broker else None
        own_before = time.process_time()
        started = time.perf_counter()
        with handle:
            summary = importer.run(rows)
        seconds = time.perf_counter() - started
        imported = _rates(written, summary, seconds, time.process_time() - own_before)
        if broker and cpu_before is not None:
            imported["broker_cpu_s"] = round(cpu_seconds(broker) - cpu_before, 2)
        produced = summary.events + summary.invalid
        landed = _records_on(bench, [bench.channel_topic("store"), bench.topic(INVALID_TOPIC.name)], produced)
        if landed != produced:
            raise RuntimeError(f"the topics hold {landed:,} records, {produced:,} were produced")
        report(
            f"import into Kafka: {imported['lines_per_s']:,} lines/s, {imported['events_per_s']:,} events/s "
            f"({summary.events:,} events + {summary.invalid:,} invalid acknowledged and on the topics, "
            f"{seconds:.1f} s; importer CPU {imported['importer_cpu_s']} s, "
            f"{imported['events_per_cpu_s']:,} events per CPU-second"
            + (f", broker CPU {imported['broker_cpu_s']} s)" if "broker_cpu_s" in imported else ")")
        )
    return {
        "lines": written,
        "events": summary.events,
        "invalid": summary.invalid,
        "encode_only": encode,
        "import": imported,
        "topic_prefix": bench.topic_prefix,
    }
