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
    partitions: int | None = None  # None: OMNISEG_KAFKA_PARTITIONS


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

RESOLVED_TOPIC = TopicSpec(
    name="events.resolved",
    key="person id, UTF-8",
    value_schema="resolved_event",
    doc="Every event with its canonical person id (identity resolution output).",
)

IDENTITY_CHANGES_TOPIC = TopicSpec(
    name="identity.changes",
    key="surviving person id, UTF-8",
    value_schema="identity_change",
    doc="Merges (older person survives) and rejected links, each published once per decision.",
)

IDENTITY_ASSIGNMENTS_TOPIC = TopicSpec(
    name="identity.assignments",
    key="identifier key kind:value, UTF-8",
    value_schema="identity_assignment",
    compacted=True,
    doc="Current owner of every normalised identifier (compacted); workers learn re-points from it.",
)

IDENTITY_LINKS_TOPIC = TopicSpec(
    name="identity.links",
    key="messageId, UTF-8",
    value_schema="event",
    partitions=1,
    doc="Events whose identifiers are not yet known to share one person, forwarded verbatim by the "
    "resolvers, and erasure requests (value erasure_request, header omniseg-record=erasure). One "
    "partition: the single link writer decides links and erasures in this total order.",
)

IDENTITY_PERSONS_TOPIC = TopicSpec(
    name="identity.persons",
    key="person id, UTF-8",
    value_schema="identity_person",
    compacted=True,
    doc="Every person issued (first seen, merged into); with identity.assignments, the link writer's state.",
)

PRODUCTS_TOPIC = TopicSpec(
    name="products.catalog",
    key="productId, UTF-8",
    value_schema="product",
    compacted=True,
    doc="The single product view: each product with its web SKUs, app product ids and store EANs.",
)

SEGMENT_DEFINITIONS_TOPIC = TopicSpec(
    name="segments.definitions",
    key="segmentId, UTF-8",
    value_schema="segment_definition",
    compacted=True,
    partitions=1,
    doc="Every segment definition version (omniseg segments apply); every segment worker reads all of it.",
)

SEGMENT_CHANGES_TOPIC = TopicSpec(
    name="segments.changes",
    key="person id, UTF-8",
    value_schema="segment_change",
    doc="Segment and audience enter/exit records, alternating per person and segment; email tools subscribe.",
)

SEGMENT_STATE_TOPIC = TopicSpec(
    name="segments.state",
    key="person id, UTF-8",
    value_schema="segment_state",
    compacted=True,
    doc="The segment workers' per-person profiles (changelog); co-partitioned with events.resolved.",
)

SEGMENT_FORWARD_TOPIC = TopicSpec(
    name="segments.forward",
    key="receiving person id, UTF-8",
    value_schema="segment_forward",
    doc="Merge hand-over and late events of merged persons between segment workers (internal).",
)

AUDIENCE_INPUTS_TOPIC = TopicSpec(
    name="audiences.inputs",
    key="person id (none for a configuration), UTF-8",
    value_schema="audience_input",
    partitions=1,
    doc="Memberships, contacts and consent of persons, and the destinations configuration, in one total "
    "order: the audience writer's input (docs/decisions/0013-audiences-for-ad-platforms.md).",
)

AUDIENCE_CONFIGURATION_TOPIC = TopicSpec(
    name="audiences.configuration",
    key='"configuration", UTF-8',
    value_schema="audience_input",
    compacted=True,
    partitions=1,
    doc="The destinations configuration last applied (compacted): segment workers forward only the "
    "memberships of segments some destination reads.",
)

AUDIENCE_DELTAS_TOPIC = TopicSpec(
    name="audiences.deltas",
    key="destination id, UTF-8",
    value_schema="audience_delta",
    partitions=1,
    doc="Hashed identifiers added to and removed from each destination's audiences; its offsets are the "
    "pull API's cursors.",
)

PRIVACY_SUPPRESSIONS_TOPIC = TopicSpec(
    name="privacy.suppressions",
    key="SHA-256 (hex) of a normalised identifier key, UTF-8",
    value_schema="privacy_suppression",
    compacted=True,
    doc="Identifiers erased with suppression (docs/privacy.md), as hashes: events carrying one are dropped "
    "at intake and by identity resolution. Written by the link writer.",
)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    *CHANNEL_TOPICS,
    INVALID_TOPIC,
    RESOLVED_TOPIC,
    IDENTITY_CHANGES_TOPIC,
    IDENTITY_ASSIGNMENTS_TOPIC,
    IDENTITY_LINKS_TOPIC,
    IDENTITY_PERSONS_TOPIC,
    PRODUCTS_TOPIC,
    SEGMENT_DEFINITIONS_TOPIC,
    SEGMENT_CHANGES_TOPIC,
    SEGMENT_STATE_TOPIC,
    SEGMENT_FORWARD_TOPIC,
    AUDIENCE_INPUTS_TOPIC,
    AUDIENCE_CONFIGURATION_TOPIC,
    AUDIENCE_DELTAS_TOPIC,
    PRIVACY_SUPPRESSIONS_TOPIC,
)


def physical_names(settings: Settings) -> list[str]:
    return [settings.topic(spec.name) for spec in ALL_TOPICS]
