"""The audience writer: the single owner of every destination's audiences, fed by ``audiences.inputs``.

Every worker runs one in the consumer group ``audiences_group``; only the member assigned the one
partition of ``audiences.inputs`` works, so inputs are applied one at a time in the order of that log
(docs/decisions/0013-audiences-for-ad-platforms.md). Per input it calls :meth:`AudienceState.apply`
and publishes the resulting deltas on the one partition of ``audiences.deltas``, per batch inside one
Kafka transaction.

Exactly once, without trusting transaction isolation (the link writer's method, decision 0011): every
delta carries the header ``omniseg-audience-pos`` = (input offset, index among that input's deltas),
and ``apply`` is a pure function of the state and the input. On (re)assignment the writer fences any
earlier owner (``init_transactions``), reads the committed offset ``C``, rebuilds the state by applying
the inputs before ``C`` without publishing, and notes the newest position on ``audiences.deltas``;
replaying from ``C``, it publishes a delta only if its position is beyond that newest one. The topic
holds a prefix of what was produced to it (idempotent producer, one partition), so exactly the missing
deltas are published, and the deltas' offsets (the pull API's cursors) never repeat a change.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from streams.domain.audiences.state import AudienceState, Configuration
from streams.kafka.config import consumer_config
from streams.kafka.positions import AUDIENCE_POSITION_HEADER, encode_position, position_of
from streams.kafka.reading import read_to_end
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Claim, Outputs, Refused, StageSpec, Step, transactional_spec
from streams.settings import Settings
from streams.topics import AUDIENCE_DELTAS_TOPIC, AUDIENCE_INPUTS_TOPIC
from streams.wire.audiences import decode_input, encode_delta
from streams.wire.codecs import SerializationError

log = logging.getLogger("streams.stages.audiences")

_TIMEOUT_S = 60.0


def writer_transactional_id(settings: Settings) -> str:
    return f"{settings.audiences_group}.writer"


def audience_writer_spec(settings: Settings) -> StageSpec:
    """The audience writer's declaration: ``audiences.inputs`` in, one transaction per batch out."""
    return transactional_spec(
        "audiences",
        settings.audiences_group,
        settings.topic(AUDIENCE_INPUTS_TOPIC.name),
        settings.segments_batch_size,
        writer_transactional_id(settings),
    )


@dataclass
class AudienceWriterStats:
    inputs: int = 0
    deltas: int = 0
    configurations: int = 0
    recoveries: int = 0
    skipped_on_replay: int = 0
    rebuilt_inputs: int = 0
    rebuild_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


class AudienceStep(Step):
    """Applies each input to the audience state it owns and publishes the deltas that follow."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stats = AudienceWriterStats()
        self.state: AudienceState | None = None
        self.owning: Any = None  # threading.Event, set by AudienceWriter
        self._inputs = settings.topic(AUDIENCE_INPUTS_TOPIC.name)
        self._deltas = settings.topic(AUDIENCE_DELTAS_TOPIC.name)
        self._published: tuple[int, int] | None = None  # newest position on audiences.deltas
        self._next_offset = 0

    def ready(self) -> bool:
        return self.state is not None

    # -- ownership ----------------------------------------------------------------------------------

    def assigned(self, partitions: list[tuple[str, int]], claim: Claim) -> None:
        """The runtime fenced earlier owners; rebuild the state as of the committed offset."""
        started = time.monotonic()
        self.stats.recoveries += 1
        committed = claim.committed(self._inputs, 0)
        reader = Consumer(
            consumer_config(
                self.settings,
                group=f"{self.settings.audiences_group}.writer-state",  # assign only, never joined
                client_id="omniseg-audience-writer-state",
                **{"enable.partition.eof": True},
            )
        )
        state = AudienceState()
        published: list[tuple[int, int]] = []
        rebuilt = 0

        def take_input(msg: Message) -> None:
            nonlocal rebuilt
            offset: int = msg.offset()  # type: ignore[assignment]
            value = msg.value()
            if offset >= committed or not value:
                return
            try:
                state.apply(decode_input(value))
            except SerializationError:
                return  # refused when it was first read; it changed nothing then either
            rebuilt += 1

        def take_delta(msg: Message) -> None:
            position = position_of(msg, AUDIENCE_POSITION_HEADER)
            if position is not None:
                published.append(position)

        try:
            read_to_end(reader, [TopicPartition(self._deltas, 0, -2)], take_delta, _TIMEOUT_S)
            if committed > 0:
                read_to_end(reader, [TopicPartition(self._inputs, 0, -2)], take_input, _TIMEOUT_S)
        finally:
            reader.close()
        self.state = state
        self._published = max(published) if published else None
        self._next_offset = committed
        gc.collect()
        gc.freeze()  # the rebuilt state is long-lived: keep it out of every later full GC pass
        for topic, partition in partitions:
            claim.seek(topic, partition, committed)
        self.stats.rebuilt_inputs = rebuilt
        self.stats.rebuild_s = time.monotonic() - started
        if self.owning is not None:
            self.owning.set()
        log.info(
            "audience writer: owner of %s from offset %d; state rebuilt from %d inputs in %.2fs "
            "(%d persons, %d audiences)",
            self._inputs,
            committed,
            rebuilt,
            self.stats.rebuild_s,
            len(state.persons),
            len(state.members),
        )

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        self._release()

    def failed_transaction(self) -> None:
        self._release()

    def _release(self) -> None:
        if self.owning is not None:
            self.owning.clear()
        self.state = None

    # -- applying -----------------------------------------------------------------------------------

    def process(self, records: list[Any], out: Outputs) -> None:
        state = self.state
        assert state is not None
        last = -1
        now = datetime.now(UTC)
        for msg in records:
            offset: int = msg.offset()
            if offset < self._next_offset:
                continue  # already handled (a fetch from before a seek)
            self._apply_one(out, state, offset, msg.value() or b"", now)
            last = offset
        if last >= 0:
            self._next_offset = last + 1

    def _apply_one(
        self, out: Outputs, state: AudienceState, offset: int, value: bytes, now: datetime
    ) -> None:
        try:
            item = decode_input(value)
        except SerializationError as exc:
            out.refused.append(Refused(self._inputs, 0, offset, value, str(exc)))
            return
        deltas = state.apply(item)
        self.stats.inputs += 1
        if isinstance(item, Configuration):
            self.stats.configurations += 1
            log.info("audience writer: configuration at offset %d applied (%d deltas)", offset, len(deltas))
        published = self._published
        for index, delta in enumerate(deltas):
            if published is not None and (offset, index) <= published:
                self.stats.skipped_on_replay += 1
                continue  # published before a crash, and its offset commit was lost
            out.placed.append(
                (
                    self._deltas,
                    delta.destination_id.encode(),
                    encode_delta(delta, now),
                    0,
                    [(AUDIENCE_POSITION_HEADER, encode_position(offset, index))],
                )
            )
            self.stats.deltas += 1


class AudienceWriter(StageRuntime):
    """The audience writer stage: :class:`AudienceStep` run by the stage runtime, one transaction per
    batch."""

    step: AudienceStep

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, audience_writer_spec(settings), AudienceStep(settings))
        self.owning = threading.Event()  # set while this writer owns the input log
        self.step.owning = self.owning

    @property
    def stats(self) -> AudienceWriterStats:
        return self.step.stats

    @property
    def state(self) -> AudienceState | None:
        return self.step.state
