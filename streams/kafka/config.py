"""Kafka client configuration for every stage, sink and tool: one place, so they cannot drift apart.

Every consumer commits by hand (offsets only after the outputs they cover are acknowledged), reads
committed records only, and every producer is idempotent with ``acks=all``. Callers pass what is
particular to them as ``extra``.
"""

from __future__ import annotations

import logging
from typing import Any

from streams.settings import Settings

_librdkafka_log = logging.getLogger("streams.kafka.librdkafka")


# How long the broker may hold a stage's fetch when there is nothing to read. The local broker (Tansu)
# answers such a fetch only when the wait runs out, so a record produced meanwhile waits up to this long.
STAGE_FETCH_WAIT_MS = 20


def consumer_config(settings: Settings, group: str, client_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "group.id": group,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        "heartbeat.interval.ms": max(500, settings.kafka_session_timeout_ms // 3),
        "enable.partition.eof": False,
        "fetch.wait.max.ms": STAGE_FETCH_WAIT_MS,
        "queued.max.messages.kbytes": 32 * 1024,
        "logger": _librdkafka_log,
    }
    config.update(extra)
    return config


def producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": settings.kafka_linger_ms,
        "compression.type": "lz4",
        # Same partition for a key as Java clients and Faust (murmur2); explicit partitions skip it.
        "partitioner": "murmur2_random",
        "message.timeout.ms": 30_000,
        "logger": _librdkafka_log,
    }
    config.update(extra)
    return config


def paced_producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    """:func:`producer_config` for a stage's producer: librdkafka lingers ``kafka_linger_ms``, and the
    stage's :class:`streams.kafka.sending.Sender` sends sooner when the stage has drained its input."""
    return producer_config(settings, client_id, **{"linger.ms": settings.kafka_linger_ms, **extra})


# A ClickHouse sink's consumer: big fetches (it inserts in batches of thousands), and the broker may
# hold a fetch up to 250 ms when there is little data. Every empty fetch costs the broker CPU, and a
# sink flushes every ``sink_flush_interval_s`` anyway, so this bounds visibility latency well enough.
SINK_CONSUMER: dict[str, Any] = {
    "fetch.wait.max.ms": 250,
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
}


def bulk_producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    """:func:`producer_config` for a bulk load (``omniseg import``): throughput over latency.

    Large lz4 batches filled for up to 200 ms, a local queue of up to 500,000 records or 256 MiB, a minute to
    deliver each, and delivery reports for failures only (pass ``on_delivery``): a load checks success
    by ``flush()`` leaving nothing unacknowledged, not by one Python callback per record.
    """
    return producer_config(
        settings,
        client_id,
        **{
            "linger.ms": 200,
            "batch.size": 1_000_000,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 262_144,
            "message.timeout.ms": 60_000,
            "delivery.report.only.error": True,
            **extra,
        },
    )
