"""Every Kafka topic omniseg uses, with its key and value schema. One place; nothing else names topics."""

from __future__ import annotations

from dataclasses import dataclass

from streams.settings import CHANNELS, Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name; the physical one is ``settings.topic(name)``
    key: str  # what the key is
    value_schema: str  # ``schemas/<value_schema>.avsc``
    compacted: bool = False
    doc: str = ""


CHANNEL_TOPICS: tuple[TopicSpec, ...] = tuple(
    TopicSpec(
        name=f"events.{channel}",
        key="source identifier (userId, then channel ids, then anonymousId), UTF-8",
        value_schema="event",
        doc=f"Raw {channel} events from the collector, importer or direct producers.",
    )
    for channel in CHANNELS
)

INVALID_TOPIC = TopicSpec(
    name="events.invalid",
    key="source name or topic, UTF-8",
    value_schema="invalid_record",
    doc="Records that failed validation or decoding, with original bytes and reason.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (*CHANNEL_TOPICS, INVALID_TOPIC)


def physical_names(settings: Settings) -> list[str]:
    return [settings.topic(spec.name) for spec in ALL_TOPICS]
