"""What every ClickHouse sink shares: Kafka records -> rows of a batch -> one insert per table -> commit.

A sink is a :class:`TableSinkStep` run by the stage runtime (:mod:`streams.kafka.runtime`); a
concrete sink says which topics it reads, how a record becomes rows (:meth:`TableSinkStep.add`) and
which topics are compacted (their empty records are tombstones, skipped).

Guarantees
----------
- At least once: a batch is a checkpoint whose table write the runtime runs in its writer thread; its
  offsets are committed only after every table of it was inserted and every refused record in it was
  acknowledged on ``events.invalid``.
- Dedup: each table's ReplacingMergeTree key is the record's natural key, so a replayed record, or a
  batch inserted twice after a partial failure, collapses and the views read exactly.
- One insert in flight: the next batch is built while ClickHouse writes the previous one (a part costs
  ClickHouse about the same whatever its size), so memory is bounded by two batches.
- ClickHouse down: the insert is retried with backoff (:class:`ClickHouseWriter`); meanwhile the
  runtime pauses the partitions and only polls to keep the group membership. At a stop it gives up
  after a grace period with nothing committed, so the batch is read again on the next start.
- Undecodable bytes become a refused record (stage = the sink's name, source = topic, position =
  ``partition/offset``, original bytes) on ``events.invalid``; the good records around them are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.kafka.config import SINK_CONSUMER
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Outputs, Refused, StageSpec, Step, TableWrite
from streams.settings import Settings
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.codecs import SerializationError

log = logging.getLogger("streams.sinks")


class TableColumns(Protocol):
    @property
    def names(self) -> Sequence[str]: ...

    @property
    def columns(self) -> list[list[Any]]: ...

    def __len__(self) -> int: ...


class TableBatch(Protocol):
    """Rows for one or more tables, column-wise."""

    def __len__(self) -> int: ...

    def tables(self) -> Iterator[tuple[str, TableColumns]]: ...


@dataclass
class SinkStats:
    """Counters since start: rows written per table (the writer thread), the rest (the stage thread)."""

    rows: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    tombstones: int = 0
    batches: int = 0
    started_at: float = field(default_factory=time.monotonic)

    @property
    def events_written(self) -> int:
        return self.rows.get("events", 0)

    @property
    def invalid_written(self) -> int:
        return self.rows.get("invalid_events", 0)


def sink_spec(
    settings: Settings,
    name: str,
    group: str,
    topics: Sequence[str],
    flush_interval_s: float | None = None,
    fetch_wait_ms: int | None = None,
) -> StageSpec:
    """A sink's declaration: batches of ``sink_batch_size`` or ``flush_interval_s`` (default
    ``sink_flush_interval_s``), one insert in flight, the producer only for refused records.

    ``fetch_wait_ms`` overrides :data:`SINK_CONSUMER`'s fetch wait for a sink whose records are few and
    awaited: the local broker answers a fetch that found nothing only when its wait runs out, so a
    record produced meanwhile waits up to the whole fetch wait before its batch even starts."""
    consumer = dict(SINK_CONSUMER)
    if fetch_wait_ms is not None:
        consumer["fetch.wait.max.ms"] = fetch_wait_ms
    return StageSpec(
        name=name,
        group=group,
        topics=list(topics),
        batch_size=settings.sink_batch_size,
        consumer=consumer,
        paced=False,
        wait_s=flush_interval_s or settings.sink_flush_interval_s,
        gather=True,
        max_inflight=1,
        commit_every_s=0.0,
        retry_failed_sends=True,
    )


class TableSinkStep(Step):
    """Records -> rows of the current batch; at a checkpoint, the batch's insert (one per table)."""

    def __init__(
        self,
        settings: Settings,
        writer: ClickHouseWriter | None,
        compacted: Sequence[str] = (),
        flush_interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.flush_interval_s = flush_interval_s or settings.sink_flush_interval_s
        self.stats = SinkStats()
        self.writer = writer or ClickHouseWriter(settings)
        self.abandon: Any = None  # the runtime's abandon event, set by the sink's runtime
        self._compacted = frozenset(compacted)
        self._batch = self.new_batch()
        self._pending = 0  # records in the current batch (rows, refused and skipped)
        self._deadline = 0.0
        self._failures_at_write = 0

    # -- what a concrete sink says ------------------------------------------------------------------

    def new_batch(self) -> TableBatch:
        raise NotImplementedError

    def add(self, batch: Any, topic: str, partition: int, offset: int, value: bytes) -> None:
        """Decode one record into ``batch`` (raises on bytes that are not a known record)."""
        raise NotImplementedError

    # -- the step -----------------------------------------------------------------------------------

    def process(self, records: list[Any], out: Outputs) -> None:
        if not self._pending:
            # A batch's clock starts with its first record: none waits longer than one interval.
            self._deadline = time.monotonic() + self.flush_interval_s
        batch, add, compacted = self._batch, self.add, self._compacted
        for msg in records:
            topic: str = msg.topic()
            value = msg.value()
            if value is None and topic in compacted:
                self.stats.tombstones += 1
                continue
            try:
                if value is None:
                    raise SerializationError("empty record (no value)")
                add(batch, topic, msg.partition(), msg.offset(), value)
            except (SerializationError, KeyError, TypeError, ValueError, IndexError) as exc:
                reason = str(exc) if isinstance(exc, SerializationError) else f"unusable record: {exc!r}"
                out.refused.append(Refused(topic, msg.partition(), msg.offset(), value or b"", reason))
                self.stats.rejected += 1
        self._pending += len(records)

    def wait_s(self, longest: float) -> float:
        if not self._pending:
            return longest
        return max(0.0, self._deadline - time.monotonic())

    def gathering(self) -> bool:
        return self._pending > 0

    def checkpoint_due(self, handled: int) -> bool:
        pending = self._pending
        return pending >= self.settings.sink_batch_size or (
            pending > 0 and time.monotonic() >= self._deadline
        )

    def checkpoint(self, out: Outputs) -> TableWrite | None:
        batch, self._batch, self._pending = self._batch, self.new_batch(), 0
        if not len(batch):
            return None
        self._failures_at_write = self.writer.failed_attempts
        # One stamp per batch: a retried write of it is the same block (insert dedup on a cluster).
        stamp = int(time.time())
        return lambda: self._insert(batch, stamp)

    def flush(self, out: Outputs) -> None:
        """Nothing is held outside the batch; the runtime's checkpoint writes it."""

    def stalled(self) -> bool:
        return self.writer.failed_attempts > self._failures_at_write

    def _insert(self, batch: TableBatch, stamp: int | None = None) -> None:
        """Writer thread: insert every table, retrying until it works or the runtime gives up."""
        written: dict[str, int] = {}
        for table, columns in batch.tables():
            self.writer.insert(
                table, columns.names, columns.columns, len(columns), wait=self._sleep, stamp=stamp
            )
            written[table] = len(columns)
        rows = self.stats.rows
        for table, count in written.items():
            rows[table] = rows.get(table, 0) + count
        self.stats.batches += 1

    def _sleep(self, seconds: float) -> bool:
        abandon = self.abandon
        if abandon is None:
            time.sleep(seconds)
            return True
        return not abandon.wait(seconds)

    def close(self) -> None:
        self.writer.close()


class TableSink(StageRuntime):
    """A ClickHouse sink: a :class:`TableSinkStep` run by the stage runtime."""

    step: TableSinkStep

    def __init__(self, settings: Settings, spec: StageSpec, step: TableSinkStep) -> None:
        super().__init__(settings, spec, step)
        step.abandon = self.abandon

    @property
    def stats(self) -> SinkStats:
        return self.step.stats
