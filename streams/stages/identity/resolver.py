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

At least once: a batch's offsets are committed only after every record it produced was acknowledged.
A replayed event is resolved again with the same messageId (downstream deduplicates by it).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.domain.identity import IdentityRules
from streams.domain.resolution import FastExtractor, fast_person, invalid_reason
from streams.kafka.config import consumer_config, paced_producer_config
from streams.kafka.hosting import GC_YOUNG_THRESHOLD
from streams.kafka.reading import consume_ready, partitions_of, read_to_end
from streams.kafka.sending import Sender
from streams.settings import CHANNELS, Settings
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_LINKS_TOPIC, INVALID_TOPIC, RESOLVED_TOPIC
from streams.wire.codecs import INVALID_CODEC, SerializationError
from streams.wire.identity import (
    ASSIGNMENT_READER,
    EVENT_DECODER,
    EventView,
    event_body,
    raw_ids,
    resolved_event,
)

log = logging.getLogger("streams.stages.identity.resolver")


def resolver_group(settings: Settings) -> str:
    return f"{settings.identity_group}.resolver"


_READ_TIMEOUT_S = 60.0
_RETRY_MAX_S = 10.0
# How long an idle turn waits for the first record (a batch is whatever has arrived: consume_ready).
_BATCH_WAIT_S = 0.02
# Batches whose records are produced but not all acknowledged yet (acks are awaited in the background,
# so a broker round trip does not stall the loop). Batches are small when the stream is quiet.
_MAX_INFLIGHT = 32
# Offsets of acknowledged batches are committed at most this often: a commit is a broker request, and
# a lost one only means a replay, which downstream deduplicates by messageId.
_COMMIT_EVERY_S = 0.5
_RETRY_MIN_S = 0.2
_SETTLE_TIMEOUT_S = 30.0


class _Batch:
    """One consumed batch: its offsets, committed once every record it produced is acknowledged."""

    __slots__ = ("failed", "offsets", "outstanding")

    def __init__(self, failed: list[tuple[_Batch, str, bytes | None, bytes | None]]) -> None:
        self.offsets: dict[tuple[str, int], int] = {}
        self.outstanding = 0
        self.failed = failed

    def __call__(self, err: KafkaError | None, msg: Message) -> None:  # delivery report
        if err is None:
            self.outstanding -= 1
        else:  # produced again by the loop (after a backoff); still outstanding
            self.failed.append((self, msg.topic() or "", msg.key(), msg.value()))


class AssignmentReplica:
    """identifier key -> person id, from the compacted ``identity.assignments`` (read committed).

    Person id strings are interned, so an identifier costs its key and one dict slot.
    """

    def __init__(self, settings: Settings) -> None:
        self.owners: dict[str, str] = {}
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
        """Read the topic from the beginning to its end; returns the records read."""
        partitions = partitions_of(self._consumer, self._topic, timeout_s)
        start = [TopicPartition(self._topic, p, -2) for p in partitions]  # -2: OFFSET_BEGINNING
        return read_to_end(self._consumer, start, self._apply, timeout_s)

    def poll(self, limit: int = 10_000) -> int:
        """Apply what arrived since (non-blocking); returns the records applied."""
        applied = 0
        for msg in self._consumer.consume(limit, 0):
            if msg.error() is None:
                self._apply(msg)
                applied += 1
        return applied

    def _apply(self, msg: Message) -> None:
        key, value = msg.key(), msg.value()
        if key is None or value is None:
            return  # assignments are never deleted; a tombstone carries nothing to learn
        try:
            person: str = ASSIGNMENT_READER.decode(value)[self._person_index]
        except SerializationError as exc:
            log.error("identity replica: skipping undecodable assignment %r: %s", key[:80], exc)
            return
        self.owners[key.decode()] = self._interned.setdefault(person, person)

    def close(self) -> None:
        self._consumer.close()


@dataclass
class ResolverStats:
    """Counters since start (single writer thread; read from others)."""

    resolved: int = 0
    linked: int = 0
    invalid: int = 0
    batches: int = 0
    replica_records: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Resolver:
    """The consume -> resolve -> produce -> commit loop. :meth:`run` blocks; :meth:`stop` ends it."""

    def __init__(self, settings: Settings, rules: IdentityRules | None = None) -> None:
        self.settings = settings
        self.rules = rules or IdentityRules.from_yaml(settings.identity_rules_path)
        self.stats = ResolverStats()
        self.ready = threading.Event()  # replica loaded and partitions assigned
        self._stop = threading.Event()
        self._extractor = FastExtractor(self.rules)
        self._topics = [settings.channel_topic(c) for c in CHANNELS]
        self._resolved_topic = settings.topic(RESOLVED_TOPIC.name)
        self._links_topic = settings.topic(IDENTITY_LINKS_TOPIC.name)
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._failed: list[tuple[_Batch, str, bytes | None, bytes | None]] = []
        self._inflight: deque[_Batch] = deque()
        self._acknowledged: dict[tuple[str, int], int] = {}  # offsets done but not committed yet
        self._next_commit = 0.0
        self._retry_delay = _RETRY_MIN_S
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        replica = AssignmentReplica(self.settings)
        producer = Producer(paced_producer_config(self.settings, "omniseg-identity-resolver"))
        consumer = Consumer(
            consumer_config(self.settings, resolver_group(self.settings), "omniseg-identity-resolver")
        )
        self._consumer, self._producer = consumer, producer
        # Long-lived state (a million-entry replica) must not be walked by every full GC pass: measured
        # p99 latency fell from ~1 s to the batch interval once the loaded state was frozen.
        gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)  # as the sinks beside it (history.py)
        try:
            loaded = replica.load()
            gc.collect()
            gc.freeze()
            self.stats.replica_records = loaded
            log.info("identity resolver: replica loaded, %d identifiers", len(replica.owners))
            consumer.subscribe(self._topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
            self._loop(consumer, producer, replica)
            self._settle(producer)
        finally:
            try:
                consumer.close()
            finally:
                replica.close()
                producer.flush(5)
        log.info(
            "identity resolver stopped: %d resolved, %d to links, %d invalid",
            self.stats.resolved,
            self.stats.linked,
            self.stats.invalid,
        )

    def _loop(self, consumer: Consumer, producer: Producer, replica: AssignmentReplica) -> None:
        batch_size = self.settings.identity_batch_size
        owners = replica.owners
        extract = self._extractor.extract
        decode = EVENT_DECODER.decode
        resolved_topic, links_topic = self._resolved_topic, self._links_topic
        produce = producer.produce
        stats = self.stats
        sender = Sender(producer, self.settings.kafka_linger_ms)
        while not self._stop.is_set():
            stats.replica_records += replica.poll()
            producer.poll(0)
            if self._complete(producer):
                sender.pending = True  # sent when drained, or after librdkafka's linger
            if len(self._inflight) >= _MAX_INFLIGHT:
                producer.poll(0.01)  # backpressure: wait for acknowledgements first
                continue
            messages = consume_ready(consumer, batch_size, sender.drained_wait_s(_BATCH_WAIT_S))
            if not messages:
                sender.drained()  # nothing arrived: what a drained turn held back goes now
                continue
            now_ms = int(time.time() * 1000)
            batch = _Batch(self._failed)
            offsets = batch.offsets
            for msg in messages:
                error = msg.error()
                if error is not None:
                    self._kafka_error(error)
                    continue
                topic: str = msg.topic()  # type: ignore[assignment]
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                offsets[(topic, partition)] = offset
                value = msg.value() or b""
                try:
                    row = decode(value)
                except SerializationError as exc:
                    self._invalid(batch, topic, partition, offset, value, str(exc), None)
                    continue
                values, tracking = raw_ids(row)
                extracted = extract(values, tracking)
                if not extracted.identifiers:
                    reason = invalid_reason(extracted.rejected)
                    field_name = extracted.rejected[0].kind.value if extracted.rejected else None
                    self._invalid(batch, topic, partition, offset, value, reason, field_name)
                    continue
                keys = [ident.key for ident in extracted.identifiers]
                person = fast_person(keys, owners)
                if person is None:
                    produce(links_topic, value, EventView(row).message_id.encode(), on_delivery=batch)
                    batch.outstanding += 1
                    stats.linked += 1
                    continue
                body = event_body(value)
                produce(
                    resolved_topic,
                    resolved_event(person, keys, now_ms, body),
                    person.encode(),
                    on_delivery=batch,
                )
                batch.outstanding += 1
                stats.resolved += 1
            self._inflight.append(batch)
            stats.batches += 1
            if batch.outstanding:
                sender.pending = True
                if len(messages) < batch_size:  # everything that had arrived is resolved: send it now
                    sender.drained()
            if not self.ready.is_set() and consumer.assignment():
                self.ready.set()

    def _invalid(
        self,
        batch: _Batch,
        topic: str,
        partition: int,
        offset: int,
        value: bytes,
        reason: str,
        field_name: str | None,
    ) -> None:
        record = {
            "stage": "identity",
            "reason": reason,
            "field": field_name,
            "source": topic,
            "position": f"{partition}/{offset}",
            "original": value,
            "receivedAt": datetime.now(UTC),
        }
        assert self._producer is not None
        self._producer.produce(
            self._invalid_topic, INVALID_CODEC.encode(record), topic.encode(), on_delivery=batch
        )
        batch.outstanding += 1
        self.stats.invalid += 1

    def _complete(self, producer: Producer, asynchronous: bool = True) -> bool:
        """Produce failed records again (with backoff); commit the leading fully acknowledged batches.

        Returns whether records were produced again (the caller's Sender then has records to send).
        """
        retried = bool(self._failed)
        if self._failed:
            failed, self._failed[:] = list(self._failed), []
            log.warning(
                "identity resolver: %d records not acknowledged; producing again in %.1fs",
                len(failed),
                self._retry_delay,
            )
            self._stop.wait(self._retry_delay)
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX_S)
            for batch, topic, key, value in failed:
                producer.produce(topic, value, key, on_delivery=batch)
        done = self._acknowledged
        inflight = self._inflight
        while inflight and inflight[0].outstanding == 0:
            done.update(inflight.popleft().offsets)
            self._retry_delay = _RETRY_MIN_S
        if done and (not asynchronous or time.monotonic() >= self._next_commit):
            self._commit(done, asynchronous)
            done.clear()
            self._next_commit = time.monotonic() + _COMMIT_EVERY_S
        return retried

    def _settle(self, producer: Producer) -> None:
        """Wait until every batch in flight is acknowledged and committed (stop and revoke)."""
        deadline = time.monotonic() + _SETTLE_TIMEOUT_S
        self._complete(producer, asynchronous=False)  # commits what is acknowledged but not committed
        while self._inflight:
            producer.flush(1)
            self._complete(producer, asynchronous=False)
            if self._inflight and time.monotonic() > deadline:
                log.error(
                    "identity resolver: %d batches not acknowledged after %.0fs; their offsets are not "
                    "committed, so they are read again later",
                    len(self._inflight),
                    _SETTLE_TIMEOUT_S,
                )
                self._inflight.clear()
                self._failed.clear()
                return

    def _commit(self, offsets: dict[tuple[str, int], int], asynchronous: bool) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            positions = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()]
            if asynchronous:
                consumer.commit(offsets=positions, asynchronous=True)
            else:
                consumer.commit(offsets=positions, asynchronous=False)
        except KafkaException as exc:
            # The outputs are acknowledged; a lost commit only means a replay, which dedup absorbs.
            log.warning("identity resolver: offset commit failed (%s); records will be re-read", exc)

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        log.warning("identity resolver: Kafka reported: %s", error.str())

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("identity resolver: assigned %d partitions", len(partitions))

    def _on_revoke(self, _consumer: Consumer, _partitions: list[TopicPartition]) -> None:
        # Finish what was read from these partitions before another worker takes them over.
        if self._producer is not None:
            self._settle(self._producer)
