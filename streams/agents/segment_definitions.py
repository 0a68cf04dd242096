"""The compacted ``segments.definitions`` topic: follow it (workers) and publish to it (the CLI).

Workers read the whole topic at start and then poll it between batches, so ``omniseg segments apply``
takes effect without a restart. A record that does not validate (written by a newer or broken tool) is
logged and skipped: the previous version of that segment stays in force.
"""

from __future__ import annotations

import logging
import time
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

from streams.agents.identity_kafka import consumer_config, partitions_of, producer_config, read_to_end
from streams.agents.segments_wire import DEFINITION_READER
from streams.domain.segments.lifecycle import Plan, Published, plan
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.model import SegmentDefinition
from streams.serde import SEGMENT_DEFINITION_CODEC, SerializationError
from streams.settings import Settings
from streams.topics import SEGMENT_DEFINITIONS_TOPIC

log = logging.getLogger("streams.agents.segments")

_I_ID, _I_VERSION, _I_DELETED, _I_DEFINITION, _I_HASH = (
    DEFINITION_READER.index(name) for name in ("segmentId", "version", "deleted", "definition", "hash")
)
_TIMEOUT_S = 30.0


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
                **{
                    "enable.partition.eof": True,
                    "isolation.level": "read_uncommitted",
                    "fetch.wait.max.ms": 250,
                },
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
    prune: bool = True,
    progress: Callable[[str], None] = lambda line: None,
) -> Plan:
    """Validate ``directory`` (all or nothing), then publish new versions of what changed."""
    desired = load_definitions(read_definition_files(directory))
    follower = DefinitionsFollower(settings, client_id="omniseg-segments-apply")
    try:
        follower.load()
        published = dict(follower.published)
    finally:
        follower.close()
    result = plan(published, desired, prune=prune)
    for write in result.writes:
        progress(f"{write.action:8} {write.segment_id} v{write.version}")
    if dry_run or not result.writes:
        return result
    failures: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r}: {err.str()}")

    producer = Producer(producer_config(settings, "omniseg-segments-apply"))
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
        producer.produce(
            follower.topic,
            SEGMENT_DEFINITION_CODEC.encode(record),
            write.segment_id.encode(),
            on_delivery=delivered,
        )
    deadline = time.monotonic() + settings.produce_timeout_s
    while producer.flush(0.5) and time.monotonic() < deadline:
        pass
    if len(producer) or failures:
        raise KafkaException(
            KafkaError(
                KafkaError._MSG_TIMED_OUT,
                f"definitions not acknowledged by {settings.kafka_bootstrap}: "
                + ("; ".join(failures[:5]) or f"{len(producer)} pending"),
            )
        )
    return result
