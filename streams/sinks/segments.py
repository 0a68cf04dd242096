"""The segments sink: ``segments.changes``, ``segments.definitions`` and ``products.catalog`` -> ClickHouse.

It fills ``segment_changes`` and ``segment_definitions`` (migration 0006) and ``products`` (0005): a
:class:`~streams.sinks.table_sink.TableSinkStep` with consumer group ``<sink_group>.segments``. Every
table is a ReplacingMergeTree on the record's natural key, so replays collapse.
"""

from __future__ import annotations

from typing import Any

from streams.settings import Settings
from streams.sinks.segment_tables import SegmentBatch
from streams.sinks.table_sink import TableSink, TableSinkStep, sink_spec
from streams.topics import PRODUCTS_TOPIC, SEGMENT_CHANGES_TOPIC, SEGMENT_DEFINITIONS_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import PRODUCT_CODEC, SEGMENT_CHANGE_CODEC, SEGMENT_DEFINITION_CODEC
from streams.wire.identity import RecordReader

_CHANGE_READER = RecordReader(SEGMENT_CHANGE_CODEC)  # a tuple per change, cheaper than fastavro's dict


class SegmentsSinkStep(TableSinkStep):
    """Segment changes, definitions and products -> the segment tables' rows."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self.changes_topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
        self.definitions_topic = settings.topic(SEGMENT_DEFINITIONS_TOPIC.name)
        self.products_topic = settings.topic(PRODUCTS_TOPIC.name)
        # Definitions and products are compacted topics: their empty records are tombstones.
        super().__init__(settings, writer, compacted=[self.definitions_topic, self.products_topic])

    def new_batch(self) -> SegmentBatch:
        return SegmentBatch()

    def add(self, batch: Any, topic: str, partition: int, offset: int, value: bytes) -> None:
        if topic == self.changes_topic:
            batch.add_change(_CHANGE_READER.decode(value), partition, offset)
        elif topic == self.definitions_topic:
            batch.add_definition(SEGMENT_DEFINITION_CODEC.decode(value))
        else:
            batch.add_product(PRODUCT_CODEC.decode(value))


class SegmentsSink(TableSink):
    """The segments sink stage."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        step = SegmentsSinkStep(settings, writer)
        topics = [step.definitions_topic, step.products_topic, step.changes_topic]
        spec = sink_spec(settings, "segments-sink", f"{settings.sink_group}.segments", topics)
        super().__init__(settings, spec, step)
