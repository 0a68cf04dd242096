"""The audiences sink: ``audiences.deltas`` -> ClickHouse ``audience_members``, ``audience_deltas`` and
``audience_frontier``.

A :class:`~streams.sinks.table_sink.TableSinkStep` with consumer group ``<sink_group>.audiences``. Each
delta is written with its Kafka offset, the pull API's cursor (migration 0009). The topic has one
partition and the runtime inserts one batch at a time, in offset order, and each batch's frontier
(largest offset + 1) after its rows, so ClickHouse holds every written offset below the recorded
frontier: :func:`streams.warehouse.audiences.frontier` relies on it. Both delta tables are
ReplacingMergeTrees keyed by the whole record, so replays collapse. A record that does not decode, or
whose hash is not lower-case SHA-256 hex, goes to ``events.invalid``.
"""

from __future__ import annotations

from typing import Any

from streams.kafka.config import STAGE_FETCH_WAIT_MS
from streams.settings import Settings
from streams.sinks.audience_tables import AudienceBatch
from streams.sinks.table_sink import TableSink, TableSinkStep, sink_spec
from streams.topics import AUDIENCE_DELTAS_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.audiences import decode_delta


def audiences_sink_group(settings: Settings) -> str:
    """The sink's consumer group: derived from ``sink_group`` so test prefixes keep groups apart."""
    return f"{settings.sink_group}.audiences"


class AudiencesSinkStep(TableSinkStep):
    """Audience deltas -> rows of both audience tables."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self.topic = settings.topic(AUDIENCE_DELTAS_TOPIC.name)
        # Deltas are few and an ad platform waits for them: short batches (docs/audiences.md).
        super().__init__(settings, writer, flush_interval_s=settings.audiences_sink_flush_interval_s)

    def new_batch(self) -> AudienceBatch:
        return AudienceBatch()

    def add(self, batch: Any, topic: str, partition: int, offset: int, value: bytes) -> None:
        delta, at = decode_delta(value)
        batch.add_delta(delta, at, offset)


class AudiencesSink(TableSink):
    """The audiences sink stage."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        step = AudiencesSinkStep(settings, writer)
        spec = sink_spec(
            settings,
            "audiences-sink",
            audiences_sink_group(settings),
            [step.topic],
            flush_interval_s=settings.audiences_sink_flush_interval_s,
            # Deltas are few and awaited: the stages' short fetch wait, not the other sinks' 250 ms.
            fetch_wait_ms=STAGE_FETCH_WAIT_MS,
        )
        super().__init__(settings, spec, step)
