"""The segments some ad-platform destination reads, as the segment stage follows them.

``omniseg destinations apply`` publishes the destinations configuration on the compacted
``audiences.configuration`` before the audience writer's ``audiences.inputs``. The segment stage reads
it whole at start and polls it every turn: it forwards to the writer only the membership changes of
segments some destination reads (most changes are of others), and when a segment starts being read it
sends the memberships its profiles hold of it (docs/decisions/0013-audiences-for-ad-platforms.md).
"""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.domain.audiences.state import Configuration, read_segments
from streams.domain.experiments.assignment import RunningUseCase
from streams.kafka.config import consumer_config
from streams.kafka.reading import read_to_end
from streams.settings import Settings
from streams.topics import AUDIENCE_CONFIGURATION_TOPIC
from streams.wire.audiences import decode_input
from streams.wire.codecs import SerializationError

log = logging.getLogger("streams.stages.segments")

_TIMEOUT_S = 60.0


class AudienceReads:
    """The read segments and running use cases of the newest configuration on
    ``audiences.configuration``, and that configuration whole (the publishers of a configuration read
    it once to keep what they do not replace: streams/stages/audiences/configuration.py)."""

    def __init__(self, settings: Settings, client_id: str = "omniseg-segments-audience-reads") -> None:
        self.topic = settings.topic(AUDIENCE_CONFIGURATION_TOPIC.name)
        self.segments: frozenset[str] = frozenset()
        self.usecases: tuple[RunningUseCase, ...] = ()  # the running use cases (their arms mark changes)
        self.configuration: Configuration | None = None  # the newest readable one, whole
        # (offset, reason) of a record after ``configuration`` that could not be read, if any
        self.unreadable: tuple[int, str] | None = None
        self._consumer = Consumer(
            consumer_config(
                settings,
                f"{settings.segments_group}.audience-reads",  # assign only, never committed
                client_id,
                # Rarely written: a slow poll costs the broker little.
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 250},
            )
        )

    def load(self, timeout_s: float = _TIMEOUT_S) -> int:
        """Read the whole topic; returns the number of records."""
        start = [TopicPartition(self.topic, 0, OFFSET_BEGINNING)]
        return read_to_end(self._consumer, start, self._take, timeout_s)

    def poll(self) -> frozenset[str]:
        """Follow the topic; returns the segments read now that were not before (usually none)."""
        before = self.segments
        for msg in self._consumer.consume(10, 0):
            if msg.error() is None:
                self._take(msg)
        return self.segments - before

    def _take(self, msg: Message) -> None:
        value = msg.value()
        if not value:
            return
        try:
            item = decode_input(value)
        except SerializationError as exc:
            log.error("segments: unreadable audiences configuration at offset %s: %s", msg.offset(), exc)
            self.unreadable = (msg.offset() or 0, str(exc))
            return
        if isinstance(item, Configuration):
            self.segments = read_segments(item)
            self.usecases = item.usecases
            self.configuration = item
            self.unreadable = None

    def close(self) -> None:
        self._consumer.close()
