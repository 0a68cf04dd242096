"""The link writer: the single owner of the IdentityGraph, fed by the one partition of ``identity.links``.

Every worker runs one in the consumer group ``<identity_group>.links``; only the member assigned the
partition works, so links are decided one at a time in the order of that log. Per event it calls
:meth:`LinkState.apply` and publishes, per batch inside one Kafka transaction:
the ResolvedEvent (``events.resolved``), merges and rejections (``identity.changes``), the new owner of
every changed identifier (``identity.assignments``) and every changed person (``identity.persons``).

Exactly once, without trusting transaction isolation (docs/decisions/0011-link-writer-positions.md)
----------------------------------------------------------------------------------------------------
Tansu serves records of aborted and open transactions to read_committed readers, so the writer does
not rely on isolation. Every record it owns on changes/assignments/persons carries a header
``(links offset, index)``; a link's records are a pure function of the state before it and the event.
On (re)assignment the writer:

1. fences any earlier owner (``init_transactions`` with the fixed transactional id);
2. reads the committed offset ``C`` of ``identity.links``;
3. rebuilds the state from ``identity.assignments`` + ``identity.persons``, ignoring records whose
   header offset is >= ``C`` (published by a batch that did not commit its offset), so the state is
   exactly the state after event ``C - 1``;
4. notes the newest header of each owned output partition, and while replaying from ``C`` produces a
   record only if its ``(offset, index)`` is beyond that partition's newest: a partition holds a prefix
   of what was produced to it (idempotent producer, one partition per key, explicit partitions), so
   this republishes exactly the missing records. Every merge is published once.

ResolvedEvents are at least once (the resolvers write the same topic, so the writer's tail is not its
own); they carry the messageId, and replays give the same person.

State on disk (docs/state.md, "Identity state on disk")
--------------------------------------
With ``state_dir`` set, the graph lives in RocksDB behind a cache of ``identity_cache_identifiers``
entries (:mod:`streams.stages.identity.link_store`). A batch's changes wait in memory until its
transaction and offset commit succeeded, and are written at the start of the next turn (or on
revocation, or on close) with the links offset they reach; a failed transaction drops them. On
assignment the store reads only the records published after its checkpoint.

Erasure (docs/privacy.md)
-------------------------
An erasure request travels on ``identity.links`` too (header ``omniseg-record: erasure``), so it takes its
place in the same total order as links. The writer removes the person's component from the graph and
publishes, in the batch's transaction: tombstones for its identifiers (``identity.assignments``) and
person ids (``identity.persons``), one ``erased`` change per person id (``identity.changes``, keyed by
it: each id's segment worker forgets it), and, unless the request says not to, the SHA-256 of each
identifier on ``privacy.suppressions``. Tombstones carry positions like every owned record, so a rebuild
applies them in order. A later event carrying a suppressed identifier is dropped and counted.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from streams.domain.identity import IdentityRules, PersonRecord
from streams.domain.privacy import suppressed
from streams.domain.resolution import FastExtractor, LinkState, invalid_reason
from streams.kafka.config import consumer_config
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.positions import POSITION_HEADER, encode_position, position_of
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Claim, Outputs, Refused, StageSpec, Step, transactional_spec
from streams.settings import Settings
from streams.stages.identity.link_store import StoredLinkState
from streams.topics import (
    IDENTITY_ASSIGNMENTS_TOPIC,
    IDENTITY_CHANGES_TOPIC,
    IDENTITY_LINKS_TOPIC,
    IDENTITY_PERSONS_TOPIC,
    PRIVACY_SUPPRESSIONS_TOPIC,
    RESOLVED_TOPIC,
)
from streams.wire.codecs import (
    ERASURE_REQUEST_CODEC,
    IDENTITY_ASSIGNMENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    IDENTITY_PERSON_CODEC,
    PRIVACY_SUPPRESSION_CODEC,
    SerializationError,
)
from streams.wire.identity import (
    ASSIGNMENT_READER,
    EVENT_DECODER,
    PERSON_READER,
    EventView,
    event_body,
    raw_ids,
    resolved_event,
)

log = logging.getLogger("streams.stages.identity.link_writer")

_TIMEOUT_S = 60.0
# The header that marks an erasure request on identity.links (its value is an ErasureRequest).
RECORD_HEADER = "omniseg-record"
ERASURE = b"erasure"


def writer_group(settings: Settings) -> str:
    return f"{settings.identity_group}.links"


def writer_transactional_id(settings: Settings) -> str:
    return f"{settings.identity_group}.link-writer"


def link_writer_spec(settings: Settings) -> StageSpec:
    """The link writer's declaration: ``identity.links`` in, one transaction per batch out."""
    return transactional_spec(
        "identity",
        writer_group(settings),
        settings.topic(IDENTITY_LINKS_TOPIC.name),
        settings.identity_batch_size,
        writer_transactional_id(settings),
    )


@dataclass
class WriterStats:
    linked: int = 0
    merges: int = 0
    rejections: int = 0
    recoveries: int = 0
    skipped_on_replay: int = 0
    erasures: int = 0
    suppressed: int = 0  # events dropped: they carry a suppressed identifier
    rebuild_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class LinkStep(Step):
    """Links each event on the graph it owns and emits the records the link decides."""

    def __init__(self, settings: Settings, rules: IdentityRules) -> None:
        self.settings = settings
        self.rules = rules
        self.stats = WriterStats()
        self.state: LinkState | None = None
        self.owning: Any = None  # threading.Event, set by LinkWriter
        self._extractor = FastExtractor(rules)
        t = settings.topic
        self._links = t(IDENTITY_LINKS_TOPIC.name)
        self._resolved = t(RESOLVED_TOPIC.name)
        self._changes = t(IDENTITY_CHANGES_TOPIC.name)
        self._assignments = t(IDENTITY_ASSIGNMENTS_TOPIC.name)
        self._persons = t(IDENTITY_PERSONS_TOPIC.name)
        self._suppressions_topic = t(PRIVACY_SUPPRESSIONS_TOPIC.name)
        self.suppressions: set[str] = set()  # suppression keys (streams.domain.privacy)
        self._partitions: dict[str, int] = {}
        self._published: dict[tuple[str, int], tuple[int, int]] = {}  # newest position per partition
        self._replay_until = -1  # links offsets up to this one may have been published already
        self._next_offset = 0
        self.stored: StoredLinkState | None = None  # the graph on disk (state_dir set)
        # While stored: a consumer that is never assigned (no fetch buffers), for the marks' watermarks.
        self._state_reader: Consumer | None = None

    def ready(self) -> bool:
        return self.state is not None

    # -- ownership ----------------------------------------------------------------------------------

    def assigned(self, partitions: list[tuple[str, int]], claim: Claim) -> None:
        """The runtime fenced earlier owners (a new transactional producer); rebuild the state as of
        the committed offset and read on from there."""
        started = time.monotonic()
        self.stats.recoveries += 1
        committed = claim.committed(self._links, 0)
        if self.settings.state_dir is not None and self.stored is None:
            self.stored = StoredLinkState(self.settings, writer_group(self.settings), self.rules)
        reader = Consumer(
            consumer_config(
                self.settings,
                group=f"{self.settings.identity_group}.link-writer-state",  # assign only, never joined
                client_id="omniseg-link-writer-state",
                **{"enable.partition.eof": True},
            )
        )
        try:
            self._partitions = {
                topic: len(partitions_of(reader, topic, _TIMEOUT_S))
                for topic in (self._changes, self._assignments, self._persons, self._suppressions_topic)
            }
            published: dict[tuple[str, int], tuple[int, int]] = {}
            if self.stored is not None:
                order = [self._persons, self._assignments, self._changes, self._suppressions_topic]
                self.state, self.suppressions = self.stored.restore(
                    reader, committed, self._partitions, order, published
                )
                if self._state_reader is None:
                    self._state_reader = Consumer(
                        consumer_config(
                            self.settings,
                            group=f"{self.settings.identity_group}.link-writer-state",
                            client_id="omniseg-link-writer-marks",
                        )
                    )
            else:
                self.state = self._rebuild(reader, committed, published)
        finally:
            reader.close()
        self._published = published
        self._replay_until = max((offset for offset, _ in published.values()), default=-1)
        self._next_offset = committed
        gc.collect()
        gc.freeze()  # the rebuilt graph is long-lived: keep it out of every later full GC pass
        for topic, partition in partitions:
            claim.seek(topic, partition, committed)
        self.stats.rebuild_s = time.monotonic() - started
        if self.owning is not None:
            self.owning.set()
        log.info(
            "link writer: owner of %s from offset %d; state rebuilt in %.2fs (%d identifiers)",
            self._links,
            committed,
            self.stats.rebuild_s,
            len(self.state.graph),
        )

    def before_turn(self, out: Outputs) -> None:
        self._write_committed()

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        self._write_committed(last=True)
        self._release()

    def failed_transaction(self) -> None:
        if self.stored is not None:
            self.stored.discard()
        self._release()

    def close(self) -> None:
        self._write_committed(last=True)
        self.state = None
        if self._state_reader is not None:
            self._state_reader.close()
            self._state_reader = None
        if self.stored is not None:
            self.stored.close()
            self.stored = None

    def _write_committed(self, last: bool = False) -> None:
        """Every turn before this one committed (a failed one was discarded): write its changes."""
        if self.stored is not None and self.state is not None:
            # Marks move only once the replay is over: before that, records published before a crash
            # with positions beyond the checkpoint lie below any watermark taken now.
            replayed = self._next_offset > self._replay_until
            reader = self._state_reader if replayed else None
            self.stored.committed(self._next_offset, reader, self._partitions, last)

    def _release(self) -> None:
        if self.owning is not None:
            self.owning.clear()
        self.state = None

    def _rebuild(
        self, reader: Consumer, committed: int, published: dict[tuple[str, int], tuple[int, int]]
    ) -> LinkState:
        """Read every owned topic to its end: the state as of ``committed``, and in ``published`` the
        newest position per partition. (All of it: Tansu's ListOffsets cannot locate a tail; see
        docs/decisions/0009-end-of-partition-from-the-fetch.md.)"""
        assignments: dict[str, tuple[str, int]] = {}
        persons: dict[str, PersonRecord] = {}
        ident_i = ASSIGNMENT_READER.index("identifier")
        owner_i = ASSIGNMENT_READER.index("personId")
        first_i = ASSIGNMENT_READER.index("firstSeen")
        pid_i = PERSON_READER.index("personId")
        pfirst_i = PERSON_READER.index("firstSeen")
        merged_i = PERSON_READER.index("mergedInto")
        interned: dict[str, str] = {}

        suppressions: set[str] = set()

        def in_state(msg: Message) -> bool:
            """Whether the record is part of the state as of ``committed`` (a tombstone too)."""
            position = position_of(msg)
            if position is not None:
                published[(msg.topic(), msg.partition())] = position  # type: ignore[index]
            return position is None or position[0] < committed

        def take_change(msg: Message) -> None:
            in_state(msg)

        def take_assignment(msg: Message) -> None:
            if not in_state(msg):
                return
            value = msg.value()
            if value is None:  # an erased identifier
                assignments.pop((msg.key() or b"").decode(), None)
                return
            row = ASSIGNMENT_READER.decode(value)
            person = interned.setdefault(row[owner_i], row[owner_i])
            assignments[row[ident_i]] = (person, row[first_i])

        def take_person(msg: Message) -> None:
            if not in_state(msg):
                return
            value = msg.value()
            if value is None:  # an erased person id
                persons.pop((msg.key() or b"").decode(), None)
                return
            row = PERSON_READER.decode(value)
            pid = interned.setdefault(row[pid_i], row[pid_i])
            persons[pid] = PersonRecord(row[pfirst_i], row[merged_i])

        def take_suppression(msg: Message) -> None:
            if in_state(msg):
                key = (msg.key() or b"").decode()
                if msg.value() is None:
                    suppressions.discard(key)
                else:
                    suppressions.add(key)

        for topic, take in (
            (self._persons, take_person),
            (self._assignments, take_assignment),
            (self._changes, take_change),
            (self._suppressions_topic, take_suppression),
        ):
            start = [TopicPartition(topic, p, -2) for p in range(self._partitions[topic])]
            read_to_end(reader, start, take, _TIMEOUT_S)
        self.suppressions = suppressions
        return LinkState.from_records(assignments, persons, self.rules)

    # -- linking ------------------------------------------------------------------------------------

    def process(self, records: list[Any], out: Outputs) -> None:
        state = self.state
        assert state is not None
        last = -1
        for msg in records:
            offset: int = msg.offset()
            if offset < self._next_offset:
                continue  # already handled (a fetch from before a seek)
            if _is_erasure(msg):
                self._erase_one(out, state, offset, msg.value() or b"")
            else:
                self._link_one(out, state, offset, msg.value() or b"")
            last = offset
        if last >= 0:
            self._next_offset = last + 1

    def _link_one(self, out: Outputs, state: LinkState, offset: int, value: bytes) -> None:
        try:
            row = EVENT_DECODER.decode(value)
        except SerializationError as exc:
            out.refused.append(Refused(self._links, 0, offset, value, str(exc)))
            return
        values, tracking = raw_ids(row)
        extracted = self._extractor.extract(values, tracking)
        if not extracted.identifiers:
            out.refused.append(Refused(self._links, 0, offset, value, invalid_reason(extracted.rejected)))
            return
        if self.suppressions and suppressed((i.key for i in extracted.identifiers), self.suppressions):
            self.stats.suppressed += 1  # dropped, not refused: events.invalid would keep its data
            return
        view = EventView(row)
        result = state.apply(
            extracted.identifiers, view.received_at_ms, view.message_id, view.channel, version=offset
        )
        now_ms = int(time.time() * 1000)
        out.sends.append(
            (
                self._resolved,
                result.person_id.encode(),
                resolved_event(result.person_id, result.identifiers, now_ms, event_body(value)),
            )
        )
        self.stats.linked += 1
        index = 0
        for records, topic, codec, key_field in (
            (result.changes, self._changes, IDENTITY_CHANGE_CODEC, "personId"),
            (result.assignments, self._assignments, IDENTITY_ASSIGNMENT_CODEC, "identifier"),
            (result.persons, self._persons, IDENTITY_PERSON_CODEC, "personId"),
        ):
            for record in records:
                self._place_owned(out, topic, codec.encode(record), record[key_field], offset, index)
                index += 1
        for change in result.changes:
            if change["kind"] == "merged":
                self.stats.merges += 1
            else:
                self.stats.rejections += 1

    def _erase_one(self, out: Outputs, state: LinkState, offset: int, value: bytes) -> None:
        try:
            request = ERASURE_REQUEST_CODEC.decode(value)
        except SerializationError as exc:
            out.refused.append(Refused(self._links, 0, offset, value, f"erasure request: {exc}"))
            return
        at_ms = _millis(request["at"])
        result = state.erase(request["personId"], request["requestId"], at_ms, request["suppress"])
        index = 0
        for change in result.changes:
            encoded = IDENTITY_CHANGE_CODEC.encode(change)
            self._place_owned(out, self._changes, encoded, change["personId"], offset, index)
            index += 1
        for key in result.identifiers:
            self._place_owned(out, self._assignments, None, key, offset, index)
            index += 1
        for pid in result.person_ids:
            self._place_owned(out, self._persons, None, pid, offset, index)
            index += 1
        for key, kind in result.suppressions:
            record = {"requestId": request["requestId"], "kind": kind, "at": at_ms}
            encoded = PRIVACY_SUPPRESSION_CODEC.encode(record)
            self._place_owned(out, self._suppressions_topic, encoded, key, offset, index)
            self.suppressions.add(key)
            if self.stored is not None:
                self.stored.tables.suppressions[key] = True
            index += 1
        self.stats.erasures += 1
        log.info(
            "link writer: erasure %s: %d person ids, %d identifiers removed, %d suppressed",
            request["requestId"],
            len(result.person_ids),
            len(result.identifiers),
            len(result.suppressions),
        )

    def _place_owned(
        self, out: Outputs, topic: str, value: bytes | None, key: str, offset: int, index: int
    ) -> None:
        key_bytes = key.encode()
        partition = murmur2_partition(key_bytes, self._partitions[topic])
        if offset <= self._replay_until:
            newest = self._published.get((topic, partition))
            if newest is not None and (offset, index) <= newest:
                self.stats.skipped_on_replay += 1
                return  # published before a crash, and its offset commit was lost
        out.placed.append(
            (topic, key_bytes, value, partition, [(POSITION_HEADER, encode_position(offset, index))])
        )


def _is_erasure(msg: Any) -> bool:
    return any(name == RECORD_HEADER and value == ERASURE for name, value in msg.headers() or ())


def _millis(at: Any) -> int:
    """A timestamp-millis field as decoded (a datetime) or as an int."""
    if isinstance(at, int):
        return at
    return int(at.timestamp() * 1000)


class LinkWriter(StageRuntime):
    """The link writer stage: :class:`LinkStep` run by the stage runtime, one transaction per batch."""

    step: LinkStep

    def __init__(self, settings: Settings, rules: IdentityRules | None = None) -> None:
        rules = rules or IdentityRules.from_yaml(settings.identity_rules_path)
        self.rules = rules
        super().__init__(settings, link_writer_spec(settings), LinkStep(settings, rules))
        self.owning = threading.Event()  # set while this writer owns the link log
        self.step.owning = self.owning

    @property
    def stats(self) -> WriterStats:
        return self.step.stats

    @property
    def state(self) -> LinkState | None:
        return self.step.state
