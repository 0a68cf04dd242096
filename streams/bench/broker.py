"""`omniseg bench broker`: what one produce + fetch round trip costs the broker as a partition grows.

The pipeline benchmark's latency got worse the longer it ran, with the same offered load. This bench
isolates the broker: on a fresh one-partition topic it appends ``step`` single-record batches at a
time, and after each step it times ``rounds`` round trips (produce one record, fetch it from the end)
and reads the broker process's CPU seconds over them. A broker with an offset index (Apache Kafka)
costs the same at every size; Tansu's memory storage costs more as the partition holds more batches.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.bench.measure import Report, cpu_seconds, dev_servers
from streams.settings import Settings


def run_broker_bench(
    settings: Settings, *, steps: int, step: int, rounds: int, report: Report, broker_pid: int | None = None
) -> dict[str, Any]:
    """``broker_pid``: the broker process whose CPU is read (default: the local stack's broker)."""
    broker = broker_pid or dev_servers(settings).get("broker (Tansu)")
    if broker is None:
        raise RuntimeError(
            "bench broker reads the broker's CPU time from /proc, so it needs the local stack's broker: "
            "run `omniseg dev up` and keep OMNISEG_KAFKA_BOOTSTRAP pointing at it"
        )
    topic = f"bench-broker-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"{topic}-reader",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    rows: list[dict[str, Any]] = []
    held = 0
    try:
        for _ in range(steps):
            for _ in range(step):  # one record per request: one batch each
                producer.produce(topic, b"x" * 200)
                producer.flush(10)
            held += step
            consumer.assign([TopicPartition(topic, 0, held)])
            cpu_before = cpu_seconds(broker)
            latencies = []
            for _ in range(rounds):
                started = time.monotonic()
                producer.produce(topic, b"y")
                producer.flush(10)
                held += 1
                while not consumer.consume(1, 1.0):
                    if time.monotonic() - started > 30:
                        raise TimeoutError("bench broker: a record was not fetched back within 30 s")
                latencies.append((time.monotonic() - started) * 1000)
            cpu_ms = (cpu_seconds(broker) - cpu_before) * 1000 / rounds
            latencies.sort()
            row = {
                "batches_in_partition": held,
                "broker_cpu_ms_per_round_trip": round(cpu_ms, 2),
                "round_trip_ms_p50": round(latencies[len(latencies) // 2], 1),
            }
            rows.append(row)
            report(
                f"{held:6,} batches in the partition: broker CPU {cpu_ms:5.2f} ms per produce + fetch, "
                f"round trip p50 {row['round_trip_ms_p50']} ms"
            )
    finally:
        consumer.close()
        for future in admin.delete_topics([topic], operation_timeout=30).values():
            try:
                future.result()
            except Exception as exc:  # the figures are measured; cleanup trouble is only reported
                report(f"cleanup: could not delete {topic}: {exc}")
    return {"steps": rows, "rounds_per_step": rounds, "record_bytes": 200}
