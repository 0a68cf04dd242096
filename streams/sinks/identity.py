"""The identity sink: ``identity.assignments``, ``identity.changes`` and ``events.resolved`` -> ClickHouse.

It fills the tables of migration 0003 (``identities``, ``identity_merges``, ``identity_rejections``,
``person_aliases``, ``event_persons``); the views of 0004 read them per canonical person. It is a
:class:`~streams.sinks.table_sink.TableSinkStep` with its own consumer group ``<sink_group>.identity``.

Guarantees
----------
- At least once: offsets are committed only after every table of the batch was inserted and every
  undecodable record in it was acknowledged on ``events.invalid``.
- Dedup: each table's ReplacingMergeTree key is the record's natural key (identifier + version,
  change_id, alias pair, channel + message_id whatever the event's day), so a replayed record, a retried
  event or a batch inserted twice after a partial failure collapses, and the views read exactly.
- ClickHouse down: the insert is retried with backoff (:class:`ClickHouseWriter`); meanwhile the
  partitions are paused and the consumer only polls to keep its group membership.
- Undecodable bytes become an ``InvalidRecord`` (stage ``identity-sink``, source = topic, position =
  ``partition/offset``, original bytes) on ``events.invalid``; the good records around them are written.
  Tombstones on the compacted ``identity.assignments`` topic are skipped (an identifier, once known, is
  never deleted from the warehouse).
"""

from __future__ import annotations

from typing import Any

from streams.settings import Settings
from streams.sinks.identity_tables import IdentityBatch
from streams.sinks.table_sink import TableSink, TableSinkStep, sink_spec
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_CHANGES_TOPIC, RESOLVED_TOPIC
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import IDENTITY_ASSIGNMENT_CODEC, IDENTITY_CHANGE_CODEC
from streams.wire.row_decoder import ResolvedDecoder


def identity_sink_group(settings: Settings) -> str:
    """The sink's consumer group: derived from ``sink_group`` so test prefixes keep groups apart."""
    return f"{settings.sink_group}.identity"


class IdentitySinkStep(TableSinkStep):
    """Assignments, identity changes and resolved events -> the identity tables' rows."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        self._resolved_topic = settings.topic(RESOLVED_TOPIC.name)
        self._changes_topic = settings.topic(IDENTITY_CHANGES_TOPIC.name)
        self.assignments_topic = settings.topic(IDENTITY_ASSIGNMENTS_TOPIC.name)
        # Tombstones on the compacted identity.assignments are skipped: an identifier, once known, is
        # never deleted from the warehouse.
        super().__init__(settings, writer, compacted=[self.assignments_topic])
        self._resolved = ResolvedDecoder()

    def new_batch(self) -> IdentityBatch:
        return IdentityBatch()

    def add(self, batch: Any, topic: str, partition: int, offset: int, value: bytes) -> None:
        if topic == self._resolved_topic:
            batch.add_resolved(self._resolved.decode(value), partition, offset)
        elif topic == self._changes_topic:
            batch.add_change(IDENTITY_CHANGE_CODEC.decode(value), partition, offset)
        else:
            batch.add_assignment(IDENTITY_ASSIGNMENT_CODEC.decode(value), partition, offset)


class IdentitySink(TableSink):
    """The identity sink stage."""

    def __init__(self, settings: Settings, writer: ClickHouseWriter | None = None) -> None:
        step = IdentitySinkStep(settings, writer)
        topics = [
            step.assignments_topic,
            settings.topic(IDENTITY_CHANGES_TOPIC.name),
            settings.topic(RESOLVED_TOPIC.name),
        ]
        spec = sink_spec(settings, "identity-sink", identity_sink_group(settings), topics)
        super().__init__(settings, spec, step)
