"""The identity resolver: channel topics -> ``events.resolved`` (fast path) or ``identity.links``.

Every worker runs one. It joins the consumer group ``<identity_group>.resolver`` on the four channel
topics and keeps a read-only replica of ``identity.assignments`` (identifier key -> person id, read from
the beginning, all partitions, no group). Per event (docs/identity.md, "Streaming design"):

- identifiers extracted with :class:`FastExtractor` (the rules, without building a pydantic Event);
- every identifier known and all owned by one person -> a ResolvedEvent on ``events.resolved`` keyed
  by that person, built by byte concatenation around the original Event body;
- otherwise (an unknown identifier, or several persons) -> the original bytes to ``identity.links``,
  whose single writer decides (:mod:`streams.stages.identity.link_writer`);
- no usable identifier (all blocked, invalid or disabled) or undecodable bytes -> ``events.invalid``
  with stage ``identity`` and the reasons.

With ``state_dir`` set, the replica lives in RocksDB with a cache of ``identity_cache_identifiers``
entries in front, and remembers per partition where it has read to (in the same write batch as the
entries), so a restart on the same disk reads only the records after that (docs/state.md,
"Identity state on disk").

At least once (the stage runtime, :mod:`streams.kafka.runtime`): a batch's offsets are committed only
after every record it produced was acknowledged. A replayed event is resolved again with the same
messageId (downstream deduplicates by it).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from streams.domain.identity import IdentityRules
from streams.domain.resolution import FastExtractor, fast_person, invalid_reason
from streams.kafka.config import consumer_config
from streams.kafka.hosting import GC_YOUNG_THRESHOLD
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Outputs, Refused, StageSpec, Step
from streams.redaction import redact_identifier
from streams.settings import CHANNELS, Settings
from streams.stages.identity.link_store import partition_end
from streams.state.identifiers import TEXT, CachedTable, IdentifierStore, open_slot, wipe
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_LINKS_TOPIC, RESOLVED_TOPIC
from streams.wire.codecs import SerializationError
from streams.wire.identity import (
    ASSIGNMENT_READER,
    EVENT_DECODER,
    EventView,
    event_body,
    raw_ids,
    resolved_event,
)

log = logging.getLogger("streams.stages.identity.resolver")

_READ_TIMEOUT_S = 60.0


def resolver_group(settings: Settings) -> str:
    return f"{settings.identity_group}.resolver"


def resolver_spec(settings: Settings) -> StageSpec:
    """The resolver's declaration: channel topics in, ``events.resolved`` / ``identity.links`` out."""
    return StageSpec(
        name="identity",
        group=resolver_group(settings),
        topics=[settings.channel_topic(c) for c in CHANNELS],
        batch_size=settings.identity_batch_size,
        paced=True,
        wait_s=0.02,
        max_inflight=32,
        # A commit is a broker request, and a lost one only means a replay (deduplicated by messageId).
        commit_every_s=0.5,
        retry_failed_sends=True,
        gc_young_threshold=GC_YOUNG_THRESHOLD,
    )


# A store's pending writes are flushed (entries and positions in one batch) at least this often on load.
_FLUSH_EVERY = 20_000


class AssignmentReplica:
    """identifier key -> person id, from the compacted ``identity.assignments`` (read committed).

    In memory (no ``state_dir``), person id strings are interned, so an identifier costs its key and one
    dict slot. On disk, see :class:`StoredOwners`.
    """

    def __init__(self, settings: Settings) -> None:
        self.owners: dict[str, str] | StoredOwners = (
            StoredOwners(settings) if settings.state_dir is not None else {}
        )
        self._interned: dict[str, str] = {}
        self._topic = settings.topic(IDENTITY_ASSIGNMENTS_TOPIC.name)
        self._person_index = ASSIGNMENT_READER.index("personId")
        self._consumer = Consumer(
            consumer_config(
                settings,
                group=f"{settings.identity_group}.replica",  # never joined or committed: assign only
                client_id="omniseg-identity-replica",
                # Small prefetch: the replica's records are small and only its dict should cost memory.
                **{"enable.partition.eof": True, "queued.max.messages.kbytes": 4096},
            )
        )

    def load(self, timeout_s: float = _READ_TIMEOUT_S) -> int:
        """Read the topic to its end (from the beginning, or from where the store had read); returns
        the records read."""
        partitions = partitions_of(self._consumer, self._topic, timeout_s)
        owners = self.owners
        if isinstance(owners, dict):
            start = [TopicPartition(self._topic, p, -2) for p in partitions]  # -2: OFFSET_BEGINNING
            return read_to_end(self._consumer, start, self._apply, timeout_s)
        starts = owners.starts(partitions)
        if _beyond_end(self._consumer, self._topic, starts):
            read = _Read(starts, shorter=True)
        else:
            read = self._read_from(owners, starts, timeout_s)
        if read.shorter:
            log.warning(
                "identity replica: %s is shorter than the store had read (recreated, or deleted past it): "
                "reading it whole",
                self._topic,
            )
            owners.reset(partitions)
            read = self._read_from(owners, owners.starts(partitions), timeout_s)
        owners.flush()
        return read.count

    def _read_from(self, owners: StoredOwners, starts: dict[int, int], timeout_s: float) -> _Read:
        """Read from ``starts`` to the end, checking each partition's first record: it must be the last
        one the store applied (the start), or a later one (compacted away); an earlier one, or none while
        the store had read some, means the partition is not the one the store read."""
        read = _Read(starts)
        tps = [TopicPartition(self._topic, p, o if o > 0 else -2) for p, o in starts.items()]

        def take(msg: Message) -> None:
            partition: int = msg.partition()  # type: ignore[assignment]
            if partition not in read.seen:
                read.seen.add(partition)
                offset: int = msg.offset()  # type: ignore[assignment]
                start = starts[partition]
                if offset < start or (offset == start and not owners.same_record(partition, msg)):
                    read.shorter = True
            if not read.shorter:
                self._apply(msg)
                read.count += 1

        read_to_end(self._consumer, tps, take, timeout_s)
        if any(o >= 0 and p not in read.seen for p, o in starts.items()):
            read.shorter = True
        return read

    def poll(self, limit: int = 10_000) -> int:
        """Apply what arrived since (non-blocking); returns the records applied."""
        applied = 0
        for msg in self._consumer.consume(limit, 0):
            if msg.error() is None:
                self._apply(msg)
                applied += 1
        if applied and not isinstance(self.owners, dict):
            self.owners.flush()
        return applied

    def _apply(self, msg: Message) -> None:
        key, value = msg.key(), msg.value()
        owners = self.owners
        if not isinstance(owners, dict):
            owners.seen(msg.partition(), msg.offset(), msg.timestamp()[1])  # type: ignore[arg-type]
        if key is None:
            return
        if value is None:  # an erased identifier (docs/privacy.md): an event carrying it goes to the link log
            owners.pop(key.decode(), None)
            return
        try:
            person: str = ASSIGNMENT_READER.decode(value)[self._person_index]
        except SerializationError as exc:
            log.error("identity replica: skipping undecodable assignment %s: %s", redact_identifier(key), exc)
            return
        if isinstance(owners, dict):
            owners[key.decode()] = self._interned.setdefault(person, person)
        else:
            owners[key.decode()] = person

    def close(self) -> None:
        self._consumer.close()
        if not isinstance(self.owners, dict):
            self.owners.close()


def _beyond_end(consumer: Consumer, topic: str, starts: dict[int, int]) -> bool:
    """Whether a partition now ends at or before the last record the store applied (recreated, or
    deleted past it); a reader started there would wait for ever on Tansu."""
    return any(
        start >= 0 and start >= partition_end(consumer, topic, partition, start + 1)
        for partition, start in starts.items()
    )


@dataclass
class _Read:
    starts: dict[int, int]
    seen: set[int] = field(default_factory=set)
    shorter: bool = False
    count: int = 0


class StoredOwners(Mapping[str, str]):
    """The replica on disk: identifier key -> person id in RocksDB (``<state_dir>/resolver/<group>/
    slot-N``) behind an LRU cache of ``identity_cache_identifiers`` entries, and per partition the offset
    of the last record applied, written in the same batch as the entries it applied."""

    def __init__(self, settings: Settings) -> None:
        assert settings.state_dir is not None
        self._capacity = settings.identity_cache_identifiers
        self.store: IdentifierStore = open_slot(settings.state_dir, "resolver", resolver_group(settings))
        self.table: CachedTable[str] = self.store.table(b"o", TEXT, self._capacity)
        # partition -> [offset, timestamp] of the last record applied
        self._applied: dict[str, list[int]] = self.store.meta("applied") or {}

    def starts(self, partitions: list[int]) -> dict[int, int]:
        """Where to read each partition from: its last applied record (read again: the check that the
        partition is the one the store read), or the beginning. Partitions the store does not know, or a
        count that changed, read everything."""
        stored = self.store.meta("partitions")
        if stored is not None and stored != len(partitions):
            log.warning("identity replica: partition count %s -> %d: reading whole", stored, len(partitions))
            self.reset(partitions)
        self.store.set_meta("partitions", len(partitions))
        return {p: self._applied.get(str(p), [-1])[0] for p in partitions}

    def same_record(self, partition: int, msg: Message) -> bool:
        """Whether ``msg`` (at the offset of the last record applied) is that record: same timestamp."""
        return self._applied.get(str(partition), [-1, -1])[1] == msg.timestamp()[1]

    def reset(self, partitions: list[int]) -> None:
        """Empty the store (its records no longer match the topic)."""
        self.store = wipe(self.store)
        self.table = self.store.table(b"o", TEXT, self._capacity)
        self._applied = {}
        self.store.set_meta("partitions", len(partitions))

    def seen(self, partition: int, offset: int, timestamp: int) -> None:
        self._applied[str(partition)] = [offset, timestamp]
        if len(self.table.pending) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self.store.set_meta("applied", self._applied)
        self.store.flush()

    # -- the mapping the fast path reads --------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        return self.table.get(key, default)

    def __getitem__(self, key: str) -> str:
        return self.table[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.table[key] = value

    def pop(self, key: str, default: Any = None) -> Any:
        return self.table.pop(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)

    def close(self) -> None:
        self.store.close()


@dataclass
class ResolverStats:
    """Counters since start (single writer thread; read from others)."""

    resolved: int = 0
    linked: int = 0
    replica_records: int = 0
    started_at: float = field(default_factory=time.monotonic)


class ResolveStep(Step):
    """Per event: every identifier known and owned by one person -> ``events.resolved``; otherwise
    -> ``identity.links``; no usable identifier or undecodable bytes -> refused with the reasons."""

    def __init__(
        self, settings: Settings, rules: IdentityRules, owners: dict[str, str] | None = None
    ) -> None:
        self.settings = settings
        self.stats = ResolverStats()
        self._extractor = FastExtractor(rules)
        self._resolved_topic = settings.topic(RESOLVED_TOPIC.name)
        self._links_topic = settings.topic(IDENTITY_LINKS_TOPIC.name)
        self._replica: AssignmentReplica | None = None
        self.owners: Mapping[str, str] = owners if owners is not None else {}
        self._loaded = owners is not None

    def start(self) -> None:
        replica = self._replica = AssignmentReplica(self.settings)
        loaded = replica.load()
        self.owners = replica.owners
        # The replica is long-lived: keep it out of every later full GC pass.
        gc.collect()
        gc.freeze()
        self.stats.replica_records = loaded
        self._loaded = True
        log.info("identity resolver: replica loaded, %d identifiers", len(replica.owners))

    def ready(self) -> bool:
        return self._loaded

    def before_turn(self, out: Outputs) -> None:
        if self._replica is not None:
            self.stats.replica_records += self._replica.poll()

    def process(self, records: list[Any], out: Outputs) -> None:
        owners = self.owners
        extract = self._extractor.extract
        decode = EVENT_DECODER.decode
        resolved_topic, links_topic = self._resolved_topic, self._links_topic
        send = out.sends.append
        stats = self.stats
        now_ms = int(time.time() * 1000)
        for msg in records:
            value = msg.value() or b""
            try:
                row = decode(value)
            except SerializationError as exc:
                out.refused.append(Refused(msg.topic(), msg.partition(), msg.offset(), value, str(exc)))
                continue
            values, tracking = raw_ids(row)
            extracted = extract(values, tracking)
            if not extracted.identifiers:
                reason = invalid_reason(extracted.rejected)
                field_name = extracted.rejected[0].kind.value if extracted.rejected else None
                out.refused.append(
                    Refused(msg.topic(), msg.partition(), msg.offset(), value, reason, field_name)
                )
                continue
            keys = [ident.key for ident in extracted.identifiers]
            person = fast_person(keys, owners)
            if person is None:
                send((links_topic, EventView(row).message_id.encode(), value))
                stats.linked += 1
                continue
            send((resolved_topic, person.encode(), resolved_event(person, keys, now_ms, event_body(value))))
            stats.resolved += 1

    def close(self) -> None:
        if self._replica is not None:
            self._replica.close()


class Resolver(StageRuntime):
    """The resolver stage: :class:`ResolveStep` run by the stage runtime."""

    step: ResolveStep

    def __init__(self, settings: Settings, rules: IdentityRules | None = None) -> None:
        rules = rules or IdentityRules.from_yaml(settings.identity_rules_path)
        self.rules = rules
        super().__init__(settings, resolver_spec(settings), ResolveStep(settings, rules))

    @property
    def stats(self) -> ResolverStats:
        return self.step.stats
