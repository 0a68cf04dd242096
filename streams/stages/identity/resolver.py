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

At least once (the stage runtime, :mod:`streams.kafka.runtime`): a batch's offsets are committed only
after every record it produced was acknowledged. A replayed event is resolved again with the same
messageId (downstream deduplicates by it).
"""

from __future__ import annotations

import gc
import logging
import time
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
        if key is None:
            return
        if value is None:  # an erased identifier (docs/privacy.md): an event carrying it goes to the link log
            self.owners.pop(key.decode(), None)
            return
        try:
            person: str = ASSIGNMENT_READER.decode(value)[self._person_index]
        except SerializationError as exc:
            log.error("identity replica: skipping undecodable assignment %s: %s", redact_identifier(key), exc)
            return
        self.owners[key.decode()] = self._interned.setdefault(person, person)

    def close(self) -> None:
        self._consumer.close()


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
        self.owners: dict[str, str] = owners if owners is not None else {}
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
