"""The link writer's state on local disk (``state_dir`` set): the graph in RocksDB behind a bounded cache,
restored from the writer's own topics by reading only what was published after its checkpoint.

The checkpoint, written in the same RocksDB batch as the entries:

- ``applied``: the offset of ``identity.links`` the tables are the state before (every event below it is
  in them, none at or after it). The writer flushes only after the batch's transaction committed and its
  offset was committed, so ``applied`` is never beyond the group's committed offset ``C``.
- ``marks``: per partition of the four owned topics, an offset before which no record has a position at
  or beyond ``applied`` (records carry ``(links offset, index)`` positions,
  docs/decisions/0011-link-writer-positions.md). Positions only grow along a partition, so reading from
  the mark finds every record the tables lack, and every record a replay must not publish again.
  Marks come from the first record read at or beyond ``C`` on a restore, and later from high watermarks
  taken after a flush, once the writer has replayed past every record published before its restore
  (those have positions beyond the checkpoint and lie below any watermark taken earlier). A watermark
  may answer too low on Tansu (docs/decisions/0009), which only means reading a little more.

Restore on assignment, with the group's committed offset ``C``: no checkpoint, ``applied > C`` (the
group's offsets were lost) or other partition counts -> the store is emptied and the topics are read
whole. Otherwise each partition is read from its mark; a partition that is now shorter than its mark
(recreated, or deleted past it) makes the reader start at its beginning, which the first offset read
shows: the store is emptied and the topics are read whole too. Records with positions in
``[applied, C)`` are applied, and every position read counts as published. (A mark is a watermark, and
the offset before it may be a transaction marker, which a reader never receives: so the check is on the
first offset read, not on a record at the mark.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streams.domain.identity import IdentityRules, PersonRecord
from streams.domain.resolution import LinkState
from streams.kafka.positions import position_of
from streams.kafka.reading import read_to_end
from streams.settings import Settings
from streams.state.identifiers import IdentifierStore, StoredLinkTables, open_slot, wipe
from streams.wire.identity import ASSIGNMENT_READER, PERSON_READER

log = logging.getLogger("streams.stages.identity.link_store")

_TIMEOUT_S = 60.0
# High watermarks (the marks) are taken after a flush at most this often.
_MARK_EVERY_S = 10.0
# While a restore applies records, pending writes are flushed (without a checkpoint) this often.
_FLUSH_EVERY = 50_000

Published = dict[tuple[str, int], tuple[int, int]]


@dataclass
class _Restore:
    """One pass over the owned topics."""

    applied: int  # records with positions in [applied, committed) are applied
    committed: int
    starts: dict[tuple[str, int], int]  # where each partition is read from (-2: the beginning)
    beyond: dict[tuple[str, int], int] = field(default_factory=dict)  # first offset at/after committed
    last: dict[tuple[str, int], int] = field(default_factory=dict)  # last offset read
    seen: set[tuple[str, int]] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)  # persons whose merge pointer was applied
    shorter: bool = False
    read: int = 0
    applied_records: int = 0


class StoredLinkState:
    """The RocksDB store of one link writer process: open while the process runs."""

    def __init__(self, settings: Settings, group: str, rules: IdentityRules) -> None:
        assert settings.state_dir is not None
        self.rules = rules
        self.capacity = settings.identity_cache_identifiers
        self.store: IdentifierStore = open_slot(settings.state_dir, "link-writer", group)
        self.tables = StoredLinkTables(self.store, self.capacity)
        self._marks: dict[str, dict[str, int]] = {}
        self._marked_at = 0.0
        self._applied = -1
        self.last_read = 0  # records read by the last restore

    # -- restore ------------------------------------------------------------------------------------

    def restore(
        self,
        reader: Consumer,
        committed: int,
        topics: dict[str, int],
        order: list[str],
        published: Published,
    ) -> tuple[LinkState, set[str]]:
        """The state as of ``committed`` and the suppression keys; fills ``published`` with the newest
        position per partition. ``topics``: partition counts; ``order``: persons, assignments, changes,
        suppressions (their roles, by position)."""
        self.store.discard()
        applied = self.store.meta("applied")
        marks = self.store.meta("marks") or {}
        counts = self.store.meta("partitions")
        whole = applied is None or applied > committed or counts != topics
        if whole and applied is not None:
            log.warning(
                "link writer state: checkpoint at %s, committed %d, partitions %s -> %s: reading whole",
                applied,
                committed,
                counts,
                topics,
            )
        if whole:
            self._reset()
            applied, marks = 0, {}
        run = _Restore(applied, committed, {}, shorter=True)
        if not _beyond_end(reader, marks):
            run = self._read(reader, applied, committed, topics, order, marks, published)
        if run.shorter:
            log.warning("link writer state: a topic is shorter than the store had read: reading whole")
            self._reset()
            published.clear()
            run = self._read(reader, 0, committed, topics, order, {}, published)
        self._fix_lineage(run.touched)
        self._marks = self._marks_after(run)
        self.store.set_meta("applied", committed)
        self._applied = committed
        self.store.set_meta("marks", self._marks)
        self.store.set_meta("partitions", topics)
        self.store.flush()
        self._marked_at = time.monotonic()
        self.last_read = run.read
        log.info(
            "link writer state: %d records read, %d applied (checkpoint %d -> %d)",
            run.read,
            run.applied_records,
            applied,
            committed,
        )
        suppressions = set(self.tables.suppressions)
        return LinkState.on(self.tables, self.rules), suppressions

    def _reset(self) -> None:
        self.store = wipe(self.store)
        self.tables = StoredLinkTables(self.store, self.capacity)

    def _read(
        self,
        reader: Consumer,
        applied: int,
        committed: int,
        topics: dict[str, int],
        order: list[str],
        marks: dict[str, dict[str, int]],
        published: Published,
    ) -> _Restore:
        starts: dict[tuple[str, int], int] = {}
        for topic, count in topics.items():
            for p in range(count):
                mark = marks.get(topic, {}).get(str(p), 0)
                starts[(topic, p)] = mark if mark > 0 else -2
        run = _Restore(applied, committed, starts)
        persons, assignments, changes, suppressions = order
        takers: dict[str, Callable[[Message], None]] = {
            persons: lambda msg: self._take_person(run, msg),
            assignments: lambda msg: self._take_assignment(run, msg),
            changes: lambda msg: None,
            suppressions: lambda msg: self._take_suppression(msg),
        }
        for topic in order:
            take = takers[topic]

            def on_message(msg: Message, take: Callable[[Message], None] = take) -> None:
                key: tuple[str, int] = (msg.topic(), msg.partition())  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                run.read += 1
                if key not in run.seen:
                    run.seen.add(key)
                    if offset < run.starts[key]:
                        run.shorter = True
                if run.shorter:
                    return
                run.last[key] = offset
                position = position_of(msg)
                if position is not None:
                    published[key] = position
                    if position[0] >= committed:
                        run.beyond.setdefault(key, offset)
                        return
                    if position[0] < applied:
                        return  # in the tables already
                take(msg)
                run.applied_records += 1
                if self.store.pending() >= _FLUSH_EVERY:
                    # Entries only: the checkpoint moves once the whole read is applied, and a crash
                    # before that applies the same records again on top of these (same end state).
                    self.store.flush()

            tps = [TopicPartition(topic, p, starts[(topic, p)]) for p in range(topics[topic])]
            read_to_end(reader, tps, on_message, _TIMEOUT_S)
        return run

    @staticmethod
    def _marks_after(run: _Restore) -> dict[str, dict[str, int]]:
        """Per partition: the first offset read whose position is at or beyond the committed offset, or
        else the end read."""
        marks: dict[str, dict[str, int]] = {}
        for topic, partition in run.starts:
            key = (topic, partition)
            mark = run.beyond.get(key)
            if mark is None:
                mark = run.last[key] + 1 if key in run.last else max(run.starts[key], 0)
            marks.setdefault(topic, {})[str(partition)] = mark
        return marks

    def _take_person(self, run: _Restore, msg: Message) -> None:
        tables = self.tables
        pid = (msg.key() or b"").decode()
        value = msg.value()
        if value is None:  # an erased person id
            tables.persons.pop(pid, None)
            tables.lineage.pop(pid, None)
            tables.members.pop(pid, None)
            run.touched.discard(pid)
            return
        row = PERSON_READER.decode(value)
        record = PersonRecord(row[_PFIRST], row[_PMERGED])
        tables.persons[pid] = record
        if record.merged_into is not None:
            run.touched.add(pid)

    def _take_assignment(self, run: _Restore, msg: Message) -> None:
        tables = self.tables
        key = (msg.key() or b"").decode()
        value = msg.value()
        old = tables.owner.get(key)
        if value is None:  # an erased identifier
            if old is not None:
                del tables.owner[key]
                self._leave(old, key)
            tables.first_seen.pop(key, None)
            return
        row = ASSIGNMENT_READER.decode(value)
        person: str = row[_AOWNER]
        if old != person:
            if old is not None:
                self._leave(old, key)
            tables.members[person] = [*tables.members.get(person, ()), key]
            tables.owner[key] = person
        tables.first_seen[key] = row[_AFIRST]

    def _leave(self, person: str, key: str) -> None:
        members = self.tables.members.get(person)
        if members is None:
            return
        rest = [k for k in members if k != key]
        if rest:
            self.tables.members[person] = rest
        else:
            del self.tables.members[person]

    def _take_suppression(self, msg: Message) -> None:
        key = (msg.key() or b"").decode()
        if msg.value() is None:
            self.tables.suppressions.pop(key, None)
        else:
            self.tables.suppressions[key] = True

    def _fix_lineage(self, touched: set[str]) -> None:
        """Put every person whose merge pointer was applied, and the ids it stood for, under its live
        person (``LinkState.lineage``). Pointers are read by partition, not in the order they were set,
        so this runs once all are applied."""
        tables = self.tables
        graph_persons = tables.persons
        lineage = tables.lineage
        for pid in sorted(touched):
            record = graph_persons.get(pid)
            if record is None or record.merged_into is None:
                continue
            live = _canonical(graph_persons, pid)
            moved = lineage.pop(pid, [])
            current = lineage.get(live, [])
            have = set(current)
            added = [p for p in (pid, *moved) if p not in have]
            if added:
                lineage[live] = [*current, *added]

    # -- while owning -------------------------------------------------------------------------------

    def committed(
        self, next_offset: int, reader: Consumer | None, topics: dict[str, int], last: bool = False
    ) -> None:
        """The transaction of every event before ``next_offset`` committed: write the tables' changes and
        the checkpoint. Now and then, and on the ``last`` call before a stop or a revocation, the marks
        move on to the high watermarks."""
        store = self.store
        now = time.monotonic()
        move = reader is not None and (last or now - self._marked_at >= _MARK_EVERY_S)
        if not store.pending() and self._applied == next_offset and not move:
            return
        store.set_meta("applied", next_offset)
        self._applied = next_offset
        if move and reader is not None:
            self._marked_at = now
            try:
                for topic, count in topics.items():
                    marks = self._marks.setdefault(topic, {})
                    for p in range(count):
                        _, high = reader.get_watermark_offsets(TopicPartition(topic, p), 5.0, cached=False)
                        marks[str(p)] = max(marks.get(str(p), 0), high)
            except KafkaException as exc:
                log.warning("link writer state: marks not moved (%s)", exc)
            else:
                store.set_meta("marks", self._marks)
        store.flush()

    def discard(self) -> None:
        """The transaction failed: forget its changes (the cache holds only what is on disk)."""
        self.store.discard()

    def close(self) -> None:
        self.store.close()

    def in_memory(self) -> int:
        return self.store.in_memory()


def _beyond_end(reader: Consumer, marks: dict[str, dict[str, int]]) -> bool:
    """Whether a partition now ends before its mark (recreated, or deleted past it)."""
    return any(
        mark > 0 and mark > partition_end(reader, topic, int(partition), mark)
        for topic, by_partition in marks.items()
        for partition, mark in by_partition.items()
    )


def partition_end(reader: Consumer, topic: str, partition: int, wanted: int) -> int:
    """The end offset of a partition, as far as it matters to know whether it reaches ``wanted``.

    A fetch from beyond the end gets nothing on Tansu (no error, no end-of-partition), so a reader
    must not start there. The high watermark answers; Tansu's can be too low (the base offset of the
    last batch plus one, docs/decisions/0009), so when it is below ``wanted`` the partition is read
    from just before it to its end (a batch at most) and the last offset read counts too.
    """
    tp = TopicPartition(topic, partition)
    _, high = reader.get_watermark_offsets(tp, _TIMEOUT_S, cached=False)
    if high >= wanted:
        return int(high)
    last = [high - 1]

    def note(msg: Message) -> None:
        last[0] = max(last[0], msg.offset() or 0)

    read_to_end(reader, [TopicPartition(topic, partition, max(high - 1, 0))], note, _TIMEOUT_S)
    return max(int(high), last[0] + 1)


def _canonical(persons: Any, pid: str) -> str:
    seen: set[str] = set()
    current = pid
    while current not in seen:
        record = persons.get(current)
        if record is None or record.merged_into is None:
            return current
        seen.add(current)
        current = record.merged_into
    return current


_AOWNER = ASSIGNMENT_READER.index("personId")
_AFIRST = ASSIGNMENT_READER.index("firstSeen")
_PFIRST = PERSON_READER.index("firstSeen")
_PMERGED = PERSON_READER.index("mergedInto")
