"""``omniseg destinations apply``: validate the destination files against the live segments and the
consent settings, then publish them with the consent policy on ``audiences.configuration`` and
``audiences.inputs``.

The writer applies a configuration at its place in the input log, so every audience is recomputed
from the same facts whatever order the files were edited in: a destination that gains an audience gets
its members as adds, one that loses an audience (or a purpose its members lack) gets removes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from streams.domain.audiences.destinations import load_destination_dir, segment_map
from streams.domain.audiences.state import Configuration
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import DefinitionsFollower
from streams.topics import AUDIENCE_CONFIGURATION_TOPIC, AUDIENCE_INPUTS_TOPIC
from streams.wire.audiences import encode_input

_FLUSH_S = 30.0


@dataclass(frozen=True)
class Applied:
    configuration: Configuration
    offset: int | None  # where it was published; None for a dry run

    def summary(self) -> str:
        audiences = sum(len(d.audiences) for d in self.configuration.destinations)
        return f"{len(self.configuration.destinations)} destinations, {audiences} audience entries"


def live_segment_map(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """Every live segment definition's id -> (kind, per), read from ``segments.definitions``."""
    follower = DefinitionsFollower(settings, client_id="omniseg-destinations-apply")
    try:
        follower.load()
    finally:
        follower.close()
    return segment_map(definition for definition, _ in follower.active.values())


def load_configuration(
    settings: Settings, directory: Path, segments: dict[str, tuple[str, str | None]] | None
) -> Configuration:
    """The destinations of ``directory`` with the consent policy of ``settings``, all validated
    (raises DestinationError listing every problem)."""
    destinations = load_destination_dir(directory, purposes=settings.consent_purposes, segments=segments)
    return Configuration(tuple(destinations), settings.consent_policy())


def apply_destinations(
    settings: Settings,
    directory: Path,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] = lambda _line: None,
) -> Applied:
    """Validate ``directory`` against the live segments and publish it (unless ``dry_run``)."""
    configuration = load_configuration(settings, directory, live_segment_map(settings))
    for destination in configuration.destinations:
        kinds = ", ".join(destination.identifiers)
        progress(
            f"ok       {destination.id} ({destination.kind}): {len(destination.audiences)} audiences, {kinds}"
        )
    if dry_run:
        return Applied(configuration, None)
    return Applied(configuration, publish_configuration(settings, configuration))


def publish_configuration(settings: Settings, configuration: Configuration) -> int:
    """Produce ``configuration`` on ``audiences.configuration`` (what segment workers forward), then
    on ``audiences.inputs`` (where the writer applies it); its offset there once acknowledged.

    In that order: a segment worker that forwards a newly read segment's memberships before the writer
    reads it costs nothing (the writer keeps them until a destination reads the segment), while the
    other way round the audience would miss those memberships until the workers learnt of it."""
    producer = Producer(producer_config(settings, "omniseg-destinations-apply"))
    delivered: list[int] = []
    failed: list[str] = []

    def report(err: object, msg: object) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            delivered.append(msg.offset())  # type: ignore[attr-defined]

    value = encode_input(configuration, datetime.now(UTC))
    for topic in (AUDIENCE_CONFIGURATION_TOPIC, AUDIENCE_INPUTS_TOPIC):
        delivered.clear()
        producer.produce(settings.topic(topic.name), value, b"configuration", on_delivery=report)
        if producer.flush(_FLUSH_S) > 0 or failed or not delivered:
            reason = failed[0] if failed else f"not acknowledged within {_FLUSH_S:g}s"
            raise KafkaException(f"the destinations were not published on {topic.name}: {reason}")
    return delivered[0]
