"""The history sink: channel topics and ``events.invalid`` -> ClickHouse ``events`` / ``invalid_events``.

A :class:`~streams.sinks.table_sink.TableSinkStep` (batches, one insert in flight, retries while
ClickHouse is down, refused records to ``events.invalid``; see there) with the hot loop inlined: per
event, one decode with the compiled reader and one generated column append.

Guarantees
----------
- Dedup: ``events`` is keyed by (channel, messageId) (migration 0007), so a replayed record, and a
  retry of the event stamped on another day or in another month, collapse into the copy received
  first, and ``events_dedup`` (FINAL, which merges across partitions) never shows an event twice.
- Bad bytes on a channel topic become an ``InvalidRecord`` (stage "sink", source = topic, position =
  "partition/offset", original bytes) on ``events.invalid``; the good records around it are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from streams.kafka.stage import Outputs, Refused
from streams.privacy.suppressions import SuppressionList
from streams.settings import CHANNELS, Settings
from streams.sinks.events_table import (
    EVENT_COLUMNS,
    INVALID_COLUMNS,
    EventColumns,
    InvalidColumns,
)
from streams.sinks.table_sink import TableSink, TableSinkStep, sink_spec
from streams.topics import INVALID_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import INVALID_CODEC, SerializationError
from streams.wire.row_decoder import EventDecoder

log = logging.getLogger("streams.sinks.events")


class _Table:
    """One table's columns under the names the writer inserts them with."""

    __slots__ = ("columns", "names", "rows")

    def __init__(self, names: tuple[str, ...], columns: EventColumns | InvalidColumns) -> None:
        self.names = names
        self.columns = columns.columns
        self.rows = len(columns)

    def __len__(self) -> int:
        return self.rows


class EventsBatch:
    """What one insert covers: ``events`` rows and ``invalid_events`` rows."""

    __slots__ = ("events", "invalid")

    def __init__(self) -> None:
        self.events = EventColumns()
        self.invalid = InvalidColumns()

    def __len__(self) -> int:
        return len(self.events) + len(self.invalid)

    def tables(self) -> Iterator[tuple[str, _Table]]:
        if len(self.events):
            yield "events", _Table(tuple(EVENT_COLUMNS), self.events)
        if len(self.invalid):
            yield "invalid_events", _Table(tuple(INVALID_COLUMNS), self.invalid)


class EventsSinkStep(TableSinkStep):
    """Channel events -> ``events`` rows; ``events.invalid`` records -> ``invalid_events`` rows."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        super().__init__(settings, writer)
        self._decoder = EventDecoder()
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        # Events carrying an erased, suppressed identifier are dropped here (docs/privacy.md).
        self.suppressions = SuppressionList(settings)

    def start(self) -> None:
        super().start()
        self.suppressions.load()

    def before_turn(self, out: Outputs) -> None:
        super().before_turn(out)
        self.suppressions.poll()

    def close(self) -> None:
        self.suppressions.close()
        super().close()

    def new_batch(self) -> EventsBatch:
        return EventsBatch()

    def process(self, records: list[Any], out: Outputs) -> None:
        if not self._pending:
            # A batch's clock starts with its first record: none waits longer than one interval.
            self._deadline = time.monotonic() + self.settings.sink_flush_interval_s
        batch: EventsBatch = self._batch  # type: ignore[assignment]
        invalid_topic = self._invalid_topic
        decode = self._decoder.decode
        append = batch.events.append
        suppressions = self.suppressions
        for msg in records:
            value = msg.value() or b""
            if msg.topic() == invalid_topic:
                self._take_invalid(batch, value, msg.partition(), msg.offset())
                continue
            try:
                row = decode(value)
            except SerializationError as exc:
                out.refused.append(Refused(msg.topic(), msg.partition(), msg.offset(), value, str(exc)))
                self.stats.rejected += 1
                continue
            if suppressions.keys and suppressions.blocks_row(row):
                continue  # an erased identifier: dropped, counted in suppressions.dropped
            append(row, msg.partition(), msg.offset())
        self._pending += len(records)

    def _take_invalid(self, batch: EventsBatch, value: bytes, partition: int, offset: int) -> None:
        try:
            record = INVALID_CODEC.decode(value)
        except SerializationError as exc:
            # Garbage on events.invalid itself: keep it in the table, never send it back to the topic.
            batch.invalid.append(
                stage="sink",
                reason=f"undecodable record on {self._invalid_topic}: {exc}",
                field="",
                source=self._invalid_topic,
                position=f"{partition}/{offset}",
                original=value,
                received_at_ms=int(time.time() * 1000),
                partition=partition,
                offset=offset,
            )
            return
        batch.invalid.append_record(record, partition, offset)


class HistorySink(TableSink):
    """The history sink stage (group ``sink_group``)."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        topics = [settings.channel_topic(c) for c in CHANNELS] + [settings.topic(INVALID_TOPIC.name)]
        # The refused records of this sink have stage "sink".
        spec = sink_spec(settings, "sink", settings.sink_group, topics)
        super().__init__(settings, spec, EventsSinkStep(settings, writer))
