"""``omniseg destinations apply``: validate the destination files against the live segments and the
consent settings, then publish them with the consent policy on ``audiences.configuration`` and
``audiences.inputs``; and :func:`publish_usecases`, which publishes the running use cases the same way.

A configuration is whole (destinations, consent policy, running use cases): each publisher reads the
newest one on ``audiences.configuration`` and replaces only its own part, so applying destinations
keeps the running use cases (their control persons stay out of the audiences) and starting or stopping
a use case keeps the destinations. Two publishers running at the same moment can still lose one's
change (the last one wins); run them one at a time.

The writer applies a configuration at its place in the input log, so every audience is recomputed
from the same facts whatever order the files were edited in: a destination that gains an audience gets
its members as adds, one that loses an audience (or a purpose its members lack) gets removes; a use
case that starts removes the hashes only its control persons gave, one that stops adds them back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaException, Producer

from streams.domain.audiences.destinations import DestinationError, load_destination_dir, segment_map
from streams.domain.audiences.state import Configuration
from streams.domain.experiments.assignment import RunningUseCase
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.audience_reads import AudienceReads
from streams.stages.segments.definitions import DefinitionsFollower
from streams.topics import AUDIENCE_CONFIGURATION_TOPIC, AUDIENCE_INPUTS_TOPIC
from streams.wire.audiences import encode_input

_FLUSH_S = 30.0
_CLIENT_ID = "omniseg-destinations-apply"


@dataclass(frozen=True)
class Applied:
    configuration: Configuration
    offset: int | None  # where it was published; None for a dry run

    def summary(self) -> str:
        audiences = sum(len(d.audiences) for d in self.configuration.destinations)
        return f"{len(self.configuration.destinations)} destinations, {audiences} audience entries"


def live_segment_map(settings: Settings) -> dict[str, tuple[str, str | None]]:
    """Every live segment definition's id -> (kind, per), read from ``segments.definitions``."""
    follower = DefinitionsFollower(settings, client_id=_CLIENT_ID)
    try:
        follower.load()
    finally:
        follower.close()
    return segment_map(definition for definition, _ in follower.active.values())


def published_configuration(settings: Settings, client_id: str) -> Configuration | None:
    """The newest configuration on ``audiences.configuration``; None if none was ever published.

    Raises DestinationError (one problem) when the newest record cannot be read by this omniseg (a
    newer one wrote it): publishing over it would drop what this one cannot see."""
    reads = AudienceReads(settings, client_id=client_id)
    try:
        reads.load()
    finally:
        reads.close()
    if reads.unreadable is not None:
        offset, reason = reads.unreadable
        raise DestinationError(
            [
                f"{AUDIENCE_CONFIGURATION_TOPIC.name} offset {offset}: the newest configuration cannot "
                f"be read by this omniseg ({reason}); nothing published"
            ]
        )
    return reads.configuration


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
    """Validate ``directory`` against the live segments and publish it (unless ``dry_run``) with the
    running use cases of the newest published configuration."""
    configuration = load_configuration(settings, directory, live_segment_map(settings))
    for destination in configuration.destinations:
        kinds = ", ".join(destination.identifiers)
        progress(
            f"ok       {destination.id} ({destination.kind}): {len(destination.audiences)} audiences, {kinds}"
        )
    published = published_configuration(settings, _CLIENT_ID)
    if published is not None and published.usecases:
        configuration = replace(configuration, usecases=published.usecases)
        running = ", ".join(f"{u.usecase_id} v{u.version}" for u in published.usecases)
        progress(f"kept     running use cases (their control persons stay out): {running}")
    if dry_run:
        return Applied(configuration, None)
    return Applied(configuration, publish_configuration(settings, configuration))


def publish_usecases(settings: Settings, usecases: tuple[RunningUseCase, ...]) -> int:
    """Publish the newest configuration with ``usecases`` as its running use cases (its destinations
    and consent policy as they are; none and the policy of ``settings`` if no configuration was ever
    published), as :func:`publish_configuration` does; its offset on ``audiences.inputs``.

    ``usecases`` are all the running ones (``streams.warehouse.usecases.running``): a use case left out
    is stopped, its control persons' hashes added back. Raises DestinationError when the newest
    configuration cannot be read by this omniseg, KafkaException when Kafka does not take it."""
    published = published_configuration(settings, "omniseg-usecases-publish")
    if published is None:
        configuration = Configuration((), settings.consent_policy(), tuple(usecases))
    else:
        configuration = replace(published, usecases=tuple(usecases))
    return publish_configuration(settings, configuration, client_id="omniseg-usecases-publish")


def publish_configuration(
    settings: Settings, configuration: Configuration, client_id: str = _CLIENT_ID
) -> int:
    """Produce ``configuration`` on ``audiences.configuration`` (what segment workers forward), then
    on ``audiences.inputs`` (where the writer applies it); its offset there once acknowledged.

    In that order: a segment worker that forwards a newly read segment's memberships before the writer
    reads it costs nothing (the writer keeps them until a destination reads the segment), while the
    other way round the audience would miss those memberships until the workers learnt of it."""
    producer = Producer(producer_config(settings, client_id))
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
            raise KafkaException(f"the configuration was not published on {topic.name}: {reason}")
    return delivered[0]
