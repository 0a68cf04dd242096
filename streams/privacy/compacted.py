"""The proof on Kafka: no live record of a compacted topic names the person.

A compacted topic's live record for a key is its newest one (a tombstone: none). Every compacted topic
that can hold a person's data is read whole (Tansu never compacts, so superseded records are read too,
but only the newest per key counts), and a live record whose key or value contains one of the
person's ids or identifiers is reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.kafka.config import consumer_config
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_PERSONS_TOPIC, SEGMENT_STATE_TOPIC

# The compacted topics that hold persons (the others hold products, definitions, configuration and
# suppression hashes).
PERSON_TOPICS = (IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_PERSONS_TOPIC, SEGMENT_STATE_TOPIC)
_TIMEOUT_S = 60.0


def live_records_naming(
    settings: Settings,
    needles: Iterable[str],
    progress: Callable[[str], None] = lambda _line: None,
) -> dict[str, int]:
    """Per compacted topic, how many live records name one of ``needles`` (empty: none do)."""
    wanted = sorted({needle.encode() for needle in needles if needle})
    found: dict[str, int] = {}
    if not wanted:
        return found
    reader = Consumer(
        consumer_config(
            settings,
            f"{settings.segments_group}.erasure-proof",  # assign only, never committed
            "omniseg-erasure-proof",
            **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"},
        )
    )
    try:
        for spec in PERSON_TOPICS:
            topic = settings.topic(spec.name)
            newest: dict[bytes, bytes | None] = {}

            def take(msg: Message, newest: dict[bytes, bytes | None] = newest) -> None:
                newest[msg.key() or b""] = msg.value()

            start = [
                TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(reader, topic, _TIMEOUT_S)
            ]
            read = read_to_end(reader, start, take, _TIMEOUT_S)
            reader.unassign()
            progress(f"checked {len(newest)} keys ({read} records) of {topic}")
            naming = sum(
                1
                for key, value in newest.items()
                if value is not None and any(n in key or n in value for n in wanted)
            )
            if naming:
                found[topic] = naming
    finally:
        reader.close()
    return found
