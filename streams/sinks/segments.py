"""The segments sink: ``segments.changes``, ``segments.definitions`` and ``products.catalog`` -> ClickHouse.

It fills ``segment_changes`` and ``segment_definitions`` (migration 0006) and ``products`` (0005). It is
the identity sink's loop (:class:`streams.sinks.identity.IdentitySink`: batch, insert every table,
send undecodable records to ``events.invalid``, then commit; retry ClickHouse with backoff while the
partitions are paused) with its own topics, tables and consumer group ``<sink_group>.segments``.
Every table is a ReplacingMergeTree on the record's natural key, so replays collapse.
"""

from __future__ import annotations

from streams.kafka.hosting import Loop, ThreadedLoops
from streams.settings import Settings
from streams.sinks.identity import IdentitySink
from streams.sinks.segment_tables import SegmentBatch
from streams.topics import PRODUCTS_TOPIC, SEGMENT_CHANGES_TOPIC, SEGMENT_DEFINITIONS_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import PRODUCT_CODEC, SEGMENT_CHANGE_CODEC, SEGMENT_DEFINITION_CODEC
from streams.wire.identity import RecordReader

_CHANGE_READER = RecordReader(SEGMENT_CHANGE_CODEC)  # a tuple per change: ~3 µs, fastavro's dict ~8 µs


class SegmentsSink(IdentitySink):
    """The consume -> decode -> insert -> commit loop for the segment tables."""

    stage = "segments-sink"

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        super().__init__(settings, writer)
        self._changes = settings.topic(SEGMENT_CHANGES_TOPIC.name)
        self._definitions = settings.topic(SEGMENT_DEFINITIONS_TOPIC.name)
        self._products = settings.topic(PRODUCTS_TOPIC.name)
        self.topics = [self._definitions, self._products, self._changes]
        self._batch = SegmentBatch()  # type: ignore[assignment]

    def group(self) -> str:
        return f"{self.settings.sink_group}.segments"

    def new_batch(self) -> SegmentBatch:  # type: ignore[override]
        return SegmentBatch()

    def _skips_tombstones(self, topic: str) -> bool:
        return topic != self._changes  # definitions and products are compacted topics

    def _add(self, topic: str, partition: int, offset: int, value: bytes) -> None:
        batch: SegmentBatch = self._batch  # type: ignore[assignment]
        if topic == self._changes:
            batch.add_change(_CHANGE_READER.decode(value), partition, offset)
        elif topic == self._definitions:
            batch.add_definition(SEGMENT_DEFINITION_CODEC.decode(value))
        else:
            batch.add_product(PRODUCT_CODEC.decode(value))


class SegmentsSinkService(ThreadedLoops):
    """Runs :class:`SegmentsSink` in a thread for the lifetime of the Faust worker."""

    def make_loops(self) -> list[tuple[str, Loop]]:
        return [("segments-sink", SegmentsSink(self.settings))]


def segments_sink_service_for(settings: Settings) -> type[ThreadedLoops]:
    """The service class to register with ``app.service`` for these settings."""
    return SegmentsSinkService.bound(settings)
