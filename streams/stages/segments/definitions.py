"""The compacted ``segments.definitions`` topic: follow it (workers) and publish to it (the CLI).

Workers read the whole topic at start and then poll it between batches, so ``omniseg segments apply``
takes effect without a restart. A record that does not validate (written by a newer or broken tool) is
logged and skipped: the previous version of that segment stays in force.

Concurrent applies. ``apply`` reads the published versions, then writes the next ones, so two applies
running at once could both write version n+1 of a segment. Each apply therefore writes in a Kafka
transaction under one ``transactional.id`` per definitions topic, and opens it *before* reading: a
second apply fences the first (aborting whatever the first had written and not committed), and the first
one's commit then fails with :class:`ConcurrentApplyError` instead of publishing versions computed from
a stale read. Readers use ``read_committed``, so an aborted apply is never seen.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from pydantic import ValidationError

from streams.domain.segments.lifecycle import Plan, Published, plan
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.model import SegmentDefinition
from streams.kafka.config import consumer_config, producer_config
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.topics import SEGMENT_DEFINITIONS_TOPIC
from streams.wire.codecs import SEGMENT_DEFINITION_CODEC, SerializationError
from streams.wire.segments import DEFINITION_READER

log = logging.getLogger("streams.stages.segments.stage")

_I_ID, _I_VERSION, _I_DELETED, _I_DEFINITION, _I_HASH = (
    DEFINITION_READER.index(name) for name in ("segmentId", "version", "deleted", "definition", "hash")
)
_TIMEOUT_S = 30.0
# Errors by which the broker says another producer with the same transactional.id took over.
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}


class ConcurrentApplyError(RuntimeError):
    """Another ``omniseg segments apply`` started while this one ran; this one published nothing."""


def apply_transaction_id(settings: Settings) -> str:
    """One transactional.id per definitions topic: every apply to that topic fences the ones before it."""
    return f"omniseg-segments-apply.{settings.topic(SEGMENT_DEFINITIONS_TOPIC.name)}"


class DefinitionsFollower:
    """The newest version of every segment, kept current from the definitions topic."""

    def __init__(self, settings: Settings, client_id: str = "omniseg-segment-definitions") -> None:
        self.topic = settings.topic(SEGMENT_DEFINITIONS_TOPIC.name)
        self.active: dict[str, tuple[SegmentDefinition, int]] = {}
        self.published: dict[str, Published] = {}
        self._consumer = Consumer(
            consumer_config(
                settings,
                f"{settings.segments_group}.definitions-reader",
                client_id,
                # Rarely written: a slow poll costs the broker little (Tansu holds an empty fetch this long).
                # read_committed (the default): an apply fenced by a later one is never seen.
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 250},
            )
        )

    def load(self, timeout_s: float = _TIMEOUT_S) -> int:
        """Read the whole topic; returns the number of records."""
        partitions = partitions_of(self._consumer, self.topic, timeout_s)
        start = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions]
        return read_to_end(self._consumer, start, self._read, timeout_s)

    def _read(self, msg: Message) -> None:
        self._apply(msg)

    def poll(self) -> set[str]:
        """Apply records published since; returns the ids whose active version changed."""
        changed: set[str] = set()
        for msg in self._consumer.consume(100, 0):
            if msg.error() is None:
                segment_id = self._apply(msg)
                if segment_id is not None:
                    changed.add(segment_id)
        return changed

    def _apply(self, msg: Message) -> str | None:
        value = msg.value()
        if value is None:
            return None
        try:
            row = DEFINITION_READER.decode(value)
            segment_id: str = row[_I_ID]
            version, deleted = row[_I_VERSION], row[_I_DELETED]
            self.published[segment_id] = Published(version, row[_I_HASH], deleted)
            if deleted:
                return segment_id if self.active.pop(segment_id, None) is not None else None
            definition = SegmentDefinition.model_validate_json(row[_I_DEFINITION] or "")
        except (SerializationError, ValidationError) as exc:
            log.error("segments: skipping definition record at %s/%s: %s", msg.partition(), msg.offset(), exc)
            return None
        before = self.active.get(segment_id)
        if before is not None and before[1] == version:
            return None
        self.active[segment_id] = (definition, version)
        return segment_id

    def close(self) -> None:
        self._consumer.close()


def read_definition_files(directory: Path) -> list[tuple[str, str]]:
    """(path, text) of every ``*.yaml`` / ``*.yml`` file in ``directory``, sorted."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory of segment definitions")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise FileNotFoundError(f"{directory}: no *.yaml segment definitions found")
    return [(str(path), path.read_text(encoding="utf-8")) for path in files]


def apply_definitions(
    settings: Settings,
    directory: Path,
    *,
    dry_run: bool = False,
    prune: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> Plan:
    """Validate ``directory`` (all or nothing), then publish new versions of what changed; live
    segments missing from ``directory`` are removed only with ``prune``.

    Raises :class:`ConcurrentApplyError` when another apply to the same topic started before this one
    committed (nothing of this one is published then), ``KafkaException`` when the broker cannot be
    reached or does not acknowledge.
    """
    desired = load_definitions(read_definition_files(directory))
    producer: Producer | None = None
    if not dry_run:
        # Opened before reading, so that an apply which starts later fences this one (module docstring).
        producer = Producer(
            producer_config(
                settings,
                "omniseg-segments-apply",
                **{"transactional.id": apply_transaction_id(settings), "transaction.timeout.ms": 60_000},
            )
        )
        producer.init_transactions(settings.produce_timeout_s)
    follower = DefinitionsFollower(settings, client_id="omniseg-segments-apply")
    try:
        follower.load()
        published = dict(follower.published)
    finally:
        follower.close()
    result = plan(published, desired, prune=prune)
    for write in result.writes:
        progress(f"{write.action:8} {write.segment_id} v{write.version}")
    for segment_id in result.kept:
        progress(f"kept     {segment_id} (live, not in {directory}; --prune removes it)")
    if producer is None or not result.writes:
        return result
    try:
        _publish(settings, producer, follower.topic, directory, result)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.code() in _FENCED:
            raise ConcurrentApplyError(
                "another `omniseg segments apply` started while this one was running, so nothing from "
                "this one was published (its versions were computed before the other's). Run it again."
            ) from exc
        raise
    return result


def _publish(settings: Settings, producer: Producer, topic: str, directory: Path, result: Plan) -> None:
    """Every write in one transaction: all of them are published, or none (``commit_transaction``
    waits for every acknowledgement and raises if any record failed)."""
    producer.begin_transaction()
    now = datetime.now(UTC)
    for write in result.writes:
        definition = write.definition
        record = {
            "segmentId": write.segment_id,
            "version": write.version,
            "deleted": definition is None,
            "definition": definition.canonical_json() if definition is not None else None,
            "hash": definition.content_hash() if definition is not None else "",
            "source": str(directory) if definition is not None else None,
            "appliedAt": now,
        }
        producer.produce(topic, SEGMENT_DEFINITION_CODEC.encode(record), write.segment_id.encode())
    try:
        producer.commit_transaction(settings.produce_timeout_s)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        if error is not None and error.txn_requires_abort():
            producer.abort_transaction(settings.produce_timeout_s)
        raise KafkaException(
            KafkaError(
                error.code() if error is not None else KafkaError._FAIL,
                f"definitions not published to {settings.kafka_bootstrap}: {error.str() if error else exc}",
            )
        ) from exc
