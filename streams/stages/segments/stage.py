"""The segment stage: ``events.resolved`` -> per-person profiles -> ``segments.changes``.

One confluent-kafka consumer in the group ``segments_group`` reads three co-partitioned topics
(``events.resolved``, ``identity.changes``, ``segments.forward``, all keyed by person with the same
partition count; the range assignor gives one worker the same partition number of each), so a worker
owns its persons' profiles outright. Like the other stages it runs in a thread hosted by a Faust
service (:class:`SegmentStageService`); the per-event Faust path measured too slow (README, Limits).

State and recovery
------------------
- Profiles live in memory and are written to the compacted ``segments.state`` (same partition number)
  every ``segments_state_flush_s``, and as soon as the input has paused for ``_IDLE_SAVE_S`` (so a
  burst's offsets are committed, and the group's lag reads zero, right after it is processed rather
  than up to a whole interval later). Such a save ends an epoch. Its profiles are written over the next
  loop turns, and its consumed offsets are committed once its outputs (changes, forwards, states) and
  those of every earlier epoch are acknowledged. The loop never stops to wait for the broker. A newly
  assigned partition is rebuilt from ``segments.state`` before its records are processed.
- A batch is whatever has arrived (``consume_ready``). The loop waits up to
  ``segments_timer_interval_s`` only when nothing has (less while a drained turn's records are
  held back: ``Sender.drained_wait_s``).
- Outputs go out after librdkafka's linger (``kafka_linger_ms``); a turn that handled everything that
  had arrived sends at once (``Sender.drained``, at most every fifth of the interval). While an
  ended epoch's states are being written, the loop does not wait.
- Each profile remembers the offset of the last record applied to it, so records replayed after a
  crash (consumed after the last commit) are skipped by profiles whose state already has them.
  Changes published after the last state write are published again on replay with the same
  ``changeId`` and ``seq`` (the engine's transitions repeat), which ClickHouse collapses.

Merges (``identity.changes``)
-----------------------------
The survivor's owner sees the merge and sends ``merge_out`` to each merged person's owner (via
``segments.forward``, keyed by the merged person). That owner publishes the merged person's exits,
keeps a pointer (merged person -> survivor, persisted in ``segments.state``), and sends the profile in a
``merge_in`` keyed by the survivor, whose owner folds it in and re-evaluates (a merge can move the
survivor into a segment). Later events still carrying the merged id are forwarded the same way.

Timers
------
Each profile knows its next deadline (window expiry, recency, days-since thresholds). A heap of
(deadline, person) is checked every ``segments_timer_interval_s`` (0.2 s), so windows expire within
about that long of their deadline with no new event (invariant 5).
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streams.domain.segments.engine import Change, ProductLookup, SegmentEngine
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.profile import Profile
from streams.kafka.config import consumer_config, paced_producer_config
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.reading import consume_ready, partitions_of, read_to_end
from streams.kafka.sending import Sender
from streams.settings import Settings
from streams.stages.segments.definitions import DefinitionsFollower
from streams.topics import (
    IDENTITY_CHANGES_TOPIC,
    INVALID_TOPIC,
    RESOLVED_TOPIC,
    SEGMENT_CHANGES_TOPIC,
    SEGMENT_FORWARD_TOPIC,
    SEGMENT_STATE_TOPIC,
)
from streams.wire.codecs import SerializationError, encode_invalid
from streams.wire.segments import (
    decode_forward,
    decode_merge,
    decode_resolved,
    decode_state,
    encode_changes,
    encode_forward,
    encode_state,
)

log = logging.getLogger("streams.stages.segments.stage")

_TIMEOUT_S = 60.0
_RESOLVED, _FORWARD = "r", "f"  # keys of Profile.offsets


@dataclass
class SegmentStats:
    events: int = 0
    changes: int = 0
    timer_changes: int = 0
    forwarded: int = 0
    merges: int = 0
    invalid: int = 0
    skipped_replays: int = 0
    state_writes: int = 0
    definitions_applied: int = 0
    started_at: float = field(default_factory=time.monotonic)


class _Epoch:
    """The outputs produced between two saves, and the input offsets they cover.

    Every record the stage produces names the current epoch as its delivery callback. A save ends the
    epoch; its offsets are committed once it and every earlier epoch are fully acknowledged, so the
    loop never stops to wait for the broker (a blocking flush here cost hundreds of ms of latency).
    """

    __slots__ = ("failures", "offsets", "outstanding")

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures
        self.outstanding = 0
        self.offsets: list[TopicPartition] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.outstanding -= 1
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err.str()}")


# Saves whose outputs are not acknowledged yet; beyond this the loop waits for the broker.
_MAX_INFLIGHT_SAVES = 4
# Profile states written per loop turn after a save: writing thousands at once stalled the loop for
# ~100 ms, which every event behind it waited for.
_STATES_PER_TURN = 500
# Young objects are moved out of the collector's view (``_freeze``) this often: the pause is as long
# as the objects made since the last time, so often means short. It was 25-35 ms every 2 s save; at
# 0.5 s, 2-37 ms (median 7) hit one input burst in ten at 5,000 events/s; 0.1 s measured a lower p99
# in two back-to-back pairs (238/264 against 375/312 ms) at slightly less CPU.
_FREEZE_EVERY_S = 0.1
# A pause in the input this long ends the epoch early (see the module docstring). Steady traffic
# arrives every send interval (tens of ms), so it does not trigger there.
_IDLE_SAVE_S = 0.25


class SegmentStage:
    """The consume -> evaluate -> publish -> (periodically) save and commit loop."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        catalog: ProductLookup | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock  # seconds; tests drive it
        self.stats = SegmentStats()
        self.ready = threading.Event()
        self.profiles: dict[str, Profile] = {}
        self.merged_into: dict[str, str] = {}
        self._stop = threading.Event()
        self._catalog = catalog
        self._replica: Any = None
        self._topics = {
            "resolved": settings.topic(RESOLVED_TOPIC.name),
            "identity": settings.topic(IDENTITY_CHANGES_TOPIC.name),
            "forward": settings.topic(SEGMENT_FORWARD_TOPIC.name),
        }
        self._changes_topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
        self._state_topic = settings.topic(SEGMENT_STATE_TOPIC.name)
        self._invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._timers: list[tuple[int, str]] = []
        self._dirty: set[str] = set()
        self._positions: dict[tuple[str, int], int] = {}
        self._failures: list[str] = []
        self._epoch = _Epoch(self._failures)
        self._inflight: deque[_Epoch] = deque()
        # An ended epoch whose touched profiles are still being written, a slice per loop turn.
        self._sealed: _Epoch | None = None
        self._to_write: list[str] = []
        self._partitions = 0
        self._engine: SegmentEngine | None = None
        self._definitions: DefinitionsFollower | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._restorer: Consumer | None = None

    # -- Loop protocol -------------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    @property
    def engine(self) -> SegmentEngine:
        assert self._engine is not None, "the stage has not started"
        return self._engine

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def run(self) -> None:
        settings = self.settings
        # Room for several saves in flight (changes + states) before produce() would raise BufferError.
        self._producer = Producer(
            paced_producer_config(settings, "omniseg-segments", **{"queue.buffering.max.messages": 1_000_000})
        )
        self._consumer = Consumer(
            consumer_config(
                settings,
                settings.segments_group,
                "omniseg-segments",
                # Co-partitioning: the same partition number of every input topic to one worker.
                **{"partition.assignment.strategy": "range"},
            )
        )
        self._restorer = Consumer(
            consumer_config(
                settings,
                f"{settings.segments_group}.restore",  # assign only, never committed
                "omniseg-segments-restore",
                **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"},
            )
        )
        self._definitions = DefinitionsFollower(settings)
        # Profiles are long-lived: full GC passes over them cost latency (as in the identity resolver).
        gc.set_threshold(50_000, 20, 20)
        try:
            self._check_partitions()
            loaded = self._definitions.load()
            self._load_catalog()
            self._engine = self._build_engine()
            log.info(
                "segments: %d definitions active (%d records read)", len(self._definitions.active), loaded
            )
            self._consumer.subscribe(
                list(self._topics.values()), on_assign=self._on_assign, on_revoke=self._on_revoke
            )
            self._loop()
            self._save_and_commit()
        finally:
            for client in (self._consumer, self._restorer):
                with contextlib.suppress(RuntimeError):
                    client.close()
            self._definitions.close()
            if self._replica is not None:
                self._replica.close()
            self._producer.flush(5)
        log.info(
            "segments stopped: %d events, %d changes (%d by timers), %d merges, %d invalid",
            self.stats.events,
            self.stats.changes,
            self.stats.timer_changes,
            self.stats.merges,
            self.stats.invalid,
        )

    def _check_partitions(self) -> None:
        assert self._restorer is not None
        counts = {
            topic: len(partitions_of(self._restorer, topic, _TIMEOUT_S))
            for topic in [*self._topics.values(), self._state_topic]
        }
        if len(set(counts.values())) != 1:
            raise RuntimeError(
                "segments: the person-keyed topics must have the same partition count to be "
                f"co-partitioned, found {counts}; recreate them with one count (omniseg topics create)"
            )
        self._partitions = next(iter(counts.values()))

    def _load_catalog(self) -> None:
        if self._catalog is not None:
            return
        try:
            from streams.stages.segments.catalog import CatalogReplica
        except ImportError:  # the catalog module is optional at this layer
            return
        self._replica = CatalogReplica(self.settings)
        count = self._replica.load(_TIMEOUT_S)
        self._catalog = self._replica.catalog
        log.info("segments: product catalog loaded (%d records)", count)

    def _build_engine(self) -> SegmentEngine:
        assert self._definitions is not None
        return SegmentEngine(
            self._definitions.active.values(),
            self._catalog,
            timezone=self.settings.segments_timezone,
            hemisphere=self.settings.segments_hemisphere,
        )

    # -- the loop ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        assert self._consumer is not None and self._producer is not None and self._definitions is not None
        consumer, producer = self._consumer, self._producer
        batch_size = self.settings.segments_batch_size
        timer_wait = self.settings.segments_timer_interval_s
        flush_every = self.settings.segments_state_flush_s
        next_flush = time.monotonic() + flush_every
        next_freeze = time.monotonic() + _FREEZE_EVERY_S
        last_input = time.monotonic()
        resolved_topic, forward_topic = self._topics["resolved"], self._topics["forward"]
        sender = Sender(producer, self.settings.kafka_linger_ms)
        while not self._stop.is_set():
            sender.pending = len(producer) > 0  # queued or in flight (in flight only: a send waits 1 ms)
            producer.poll(0)
            self._complete()
            while len(self._inflight) > _MAX_INFLIGHT_SAVES and not self._stop.is_set():
                producer.poll(0.05)  # backpressure: the broker is behind
                self._complete()
            if self._replica is not None:
                self._replica.poll()
            changed = self._definitions.poll()
            if changed:
                self._redefine(changed)
            # While an ended epoch's states are still being written, the loop does not wait for input:
            # idle turns wrote only a slice each, so a finished backlog's last commit came seconds late.
            wait = 0.0 if self._sealed is not None else sender.drained_wait_s(timer_wait)
            messages = consume_ready(consumer, batch_size, wait)
            now = self.now_ms()
            for msg in messages:
                error = msg.error()
                if error is not None:
                    if error.fatal():
                        raise KafkaException(error)
                    log.warning("segments: Kafka reported %s", error.str())
                    continue
                topic: str = msg.topic()  # type: ignore[assignment]
                partition: int = msg.partition()  # type: ignore[assignment]
                offset: int = msg.offset()  # type: ignore[assignment]
                self._positions[(topic, partition)] = offset
                value = msg.value()
                if value is None:
                    continue
                try:
                    if topic == resolved_topic:
                        self._on_resolved(value, offset, now, _RESOLVED)
                    elif topic == forward_topic:
                        self._on_forward(value, offset, now)
                    else:
                        self._on_identity_change(value, now)
                except SerializationError as exc:
                    self._invalid(topic, partition, offset, value, str(exc))
            handled = len(messages)
            # Released now, not at the next turn: a save or freeze below would otherwise walk them.
            messages.clear()
            if handled:
                last_input = time.monotonic()
                sender.pending = len(producer) > 0
            if handled < batch_size:  # everything that had arrived is handled: this turn's changes go
                sender.drained()  # out before the state work below, not after it
            self._fire_timers(self.now_ms())
            if self._sealed is not None:  # at least as many states as events this turn: keeps pace
                self._write_sealed(max(_STATES_PER_TURN, handled))
            if not self.ready.is_set() and consumer.assignment():
                self.ready.set()
            idle = (
                not handled
                and self._sealed is None
                and bool(self._dirty)
                and time.monotonic() - last_input >= _IDLE_SAVE_S
            )
            if idle or time.monotonic() >= next_flush:
                self._save()
                next_flush = time.monotonic() + flush_every
                next_freeze = time.monotonic() + _FREEZE_EVERY_S
            elif time.monotonic() >= next_freeze:
                self._freeze()
                next_freeze = time.monotonic() + _FREEZE_EVERY_S

    def _on_resolved(
        self, value: bytes, offset: int, now: int, source: str, person: str | None = None
    ) -> None:
        decoded_person, event = decode_resolved(value)
        person = person or decoded_person
        target = self.merged_into.get(person)
        if target is not None:
            self._forward("event", target, now, from_person=person, event=value)
            return
        profile = self._profile(person)
        if profile.offsets.get(source, -1) >= offset:
            self.stats.skipped_replays += 1
            return
        profile.offsets[source] = offset
        self._apply(profile, event, now)

    def _apply(self, profile: Profile, event: SegmentEvent, now: int) -> None:
        due = profile.due
        changes = self.engine.apply(profile, event, now)
        self.stats.events += 1
        self._dirty.add(profile.person_id)
        if changes:
            self._publish(profile, changes, now)
        if profile.due and profile.due != due:
            heapq.heappush(self._timers, (profile.due, profile.person_id))

    def _on_forward(self, value: bytes, offset: int, now: int) -> None:
        kind, person, from_person, into_person, state, event = decode_forward(value)
        if kind == "merge_out":
            self._merge_out(person, into_person or person, now)
            return
        target = self.merged_into.get(person)
        if target is not None:  # the receiver was merged on in turn: pass it along
            self._forward(kind, target, now, from_person=from_person, state=state, event=event)
            return
        if kind == "event" and event is not None:
            self._on_resolved(event, offset, now, _FORWARD, person=person)
            return
        profile = self._profile(person)
        if profile.offsets.get(_FORWARD, -1) >= offset:
            self.stats.skipped_replays += 1
            return
        profile.offsets[_FORWARD] = offset
        if state:
            merged = Profile.from_json(state)
            merged.members.clear()  # its owner already published its exits
            merged.versions.clear()
            _, changes = self.engine.absorb(profile, merged, now)
            self._dirty.add(person)
            self.stats.merges += 1
            if changes:
                self._publish(profile, changes, now)
            if profile.due:
                heapq.heappush(self._timers, (profile.due, person))

    def _on_identity_change(self, value: bytes, now: int) -> None:
        kind, survivor, merged = decode_merge(value)
        if kind != "merged":
            return
        for person in merged:
            if person != survivor:
                self._forward("merge_out", person, now, into_person=survivor)

    def _merge_out(self, person: str, survivor: str, now: int) -> None:
        if person in self.merged_into or person == survivor:
            return  # replayed: already handed over
        profile = self.profiles.pop(person, None)
        state = None
        if profile is not None:
            changes = self.engine.release(profile, now, survivor)
            if changes:
                self._publish(profile, changes, now)
            state = profile.to_json()
        self.merged_into[person] = survivor
        self._dirty.add(person)
        self._forward("merge_in", survivor, now, from_person=person, state=state)

    def _forward(
        self,
        kind: str,
        person: str,
        now: int,
        *,
        from_person: str | None = None,
        into_person: str | None = None,
        state: bytes | None = None,
        event: bytes | None = None,
    ) -> None:
        assert self._producer is not None
        record = encode_forward(
            kind, person, now, from_person=from_person, into_person=into_person, state=state, event=event
        )
        epoch = self._epoch
        self._producer.produce(self._topics["forward"], record, person.encode(), on_delivery=epoch)
        epoch.outstanding += 1
        self.stats.forwarded += 1

    def _profile(self, person: str) -> Profile:
        profile = self.profiles.get(person)
        if profile is None:
            profile = self.profiles[person] = Profile(person)
        return profile

    def _fire_timers(self, now: int) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            due, person = heapq.heappop(timers)
            profile = self.profiles.get(person)
            if profile is None or profile.due != due:
                continue  # stale entry: the deadline moved or the person left
            changes = self.engine.tick(profile, now)
            self._dirty.add(person)
            if changes:
                self.stats.timer_changes += len(changes)
                self._publish(profile, changes, now)
            if profile.due:
                heapq.heappush(timers, (profile.due, person))

    def _redefine(self, changed: set[str]) -> None:
        assert self._definitions is not None
        self._engine = self._build_engine()
        now = self.now_ms()
        versions = ", ".join(
            f"{sid} v{self._definitions.active[sid][1]}"
            if sid in self._definitions.active
            else f"{sid} removed"
            for sid in sorted(changed)
        )
        log.info(
            "segments: definitions changed (%s); re-evaluating %d profiles", versions, len(self.profiles)
        )
        started = time.monotonic()
        for index, profile in enumerate(self.profiles.values()):
            changes = self.engine.reevaluate(
                profile, now, "definition", f"definitions changed: {versions}", changed
            )
            if changes:
                self._publish(profile, changes, now)
                self._dirty.add(profile.person_id)
            if profile.due:
                heapq.heappush(self._timers, (profile.due, profile.person_id))
            if index and index % 100_000 == 0:
                log.info("segments: re-evaluated %d of %d profiles", index, len(self.profiles))
        self.stats.definitions_applied += 1
        log.info(
            "segments: re-evaluated %d profiles in %.1fs", len(self.profiles), time.monotonic() - started
        )

    def _publish(self, profile: Profile, changes: list[Change], now: int) -> None:
        assert self._producer is not None
        produce = self._producer.produce
        key = profile.person_id.encode()
        topic, epoch = self._changes_topic, self._epoch
        for record in encode_changes(changes, profile, now):
            produce(topic, record, key, on_delivery=epoch)
        epoch.outstanding += len(changes)
        self.stats.changes += len(changes)

    def _invalid(self, topic: str, partition: int, offset: int, value: bytes, reason: str) -> None:
        assert self._producer is not None
        record = encode_invalid(
            "segments", reason, source=topic, position=f"{partition}/{offset}", original=value
        )
        epoch = self._epoch
        self._producer.produce(self._invalid_topic, record, topic.encode(), on_delivery=epoch)
        epoch.outstanding += 1
        self.stats.invalid += 1

    # -- state and offsets ---------------------------------------------------------------------------

    def _write_states(self, partitions: set[int] | None = None) -> None:
        """Produce the state of every touched profile (of ``partitions``, or all)."""
        assert self._producer is not None
        now = self.now_ms()
        produce, epoch = self._producer.produce, self._epoch
        written = []
        for person in self._dirty:
            if partitions is not None and self._partition(person) not in partitions:
                continue
            written.append(person)
            produce(self._state_topic, self._state(person, now), person.encode(), on_delivery=epoch)
        epoch.outstanding += len(written)
        self._dirty.difference_update(written)
        self.stats.state_writes += len(written)

    def _state(self, person: str, now: int) -> bytes:
        """The segments.state record of ``person``: the profile, or where it was merged."""
        target = self.merged_into.get(person)
        return encode_state(person, None if target is not None else self.profiles.get(person), target, now)

    def _save(self) -> None:
        """End the epoch: its touched profiles are written over the next loop turns, and its offsets
        are committed once all of that (and every output before) is acknowledged.

        A profile written late may include events of the next epoch; that is safe, because each
        profile records the offset of the last record applied to it and a replay skips what it has.
        """
        self._write_sealed(len(self._to_write))  # the previous save first, whole
        epoch = self._epoch
        epoch.offsets = [TopicPartition(t, p, offset + 1) for (t, p), offset in self._positions.items()]
        self._positions.clear()
        # In memory order: a profile's objects lie near each other and near its neighbours', so a
        # sweep by address finds more of them cached than hash order does (cold state writes
        # measured 21-25% cheaper; written from the end of the list, hence descending). The sort
        # is one pause per save: 22-28 ms for 25,000 touched persons, 65-96 ms for 75,000.
        profiles = self.profiles
        self._to_write = sorted(self._dirty, key=lambda person: id(profiles.get(person)), reverse=True)
        self._dirty.clear()
        self._sealed = epoch
        self._epoch = _Epoch(self._failures)
        self._freeze()

    def _write_sealed(self, limit: int) -> None:
        """Write up to ``limit`` states of the ended epoch; when none are left it joins the in-flight."""
        sealed = self._sealed
        if sealed is None:
            return
        assert self._producer is not None
        now = self.now_ms()
        produce, todo = self._producer.produce, self._to_write
        count = min(limit, len(todo))
        for _ in range(count):
            person = todo.pop()
            produce(self._state_topic, self._state(person, now), person.encode(), on_delivery=sealed)
        sealed.outstanding += count
        self.stats.state_writes += count
        if not todo:
            self._inflight.append(sealed)
            self._sealed = None

    def _complete(self) -> None:
        """Commit the offsets of the leading acknowledged epochs; stop on any failed output."""
        if self._failures:
            # Offsets stay uncommitted: a restart replays and publishes again (same change ids).
            raise RuntimeError(
                "segments: outputs not acknowledged, not committing: " + "; ".join(self._failures[:3])
            )
        inflight = self._inflight
        if not inflight or inflight[0].outstanding:
            return
        done: dict[tuple[str, int], TopicPartition] = {}
        while inflight and inflight[0].outstanding == 0:
            for tp in inflight.popleft().offsets:
                done[(tp.topic, tp.partition)] = tp
        if done:
            assert self._consumer is not None
            self._consumer.commit(offsets=list(done.values()), asynchronous=True)

    def _save_and_commit(self, partitions: set[int] | None = None) -> None:
        """Write touched profiles, wait for every output, then commit what was consumed (stop, revoke)."""
        assert self._producer is not None and self._consumer is not None
        self._write_sealed(len(self._to_write))
        self._write_states(partitions)
        deadline = time.monotonic() + self.settings.produce_timeout_s * 3
        while self._producer.flush(0.5) and time.monotonic() < deadline:
            pass
        if len(self._producer) or self._failures:
            # Offsets stay uncommitted: a restart replays and publishes again (same change ids).
            raise RuntimeError(
                "segments: outputs not acknowledged, not committing: "
                + ("; ".join(self._failures[:3]) or f"{len(self._producer)} pending")
            )
        # Everything produced so far is acknowledged: every ended epoch is complete too.
        done: dict[tuple[str, int], TopicPartition] = {}
        while self._inflight:
            for tp in self._inflight.popleft().offsets:
                done[(tp.topic, tp.partition)] = tp
        for (topic, partition), offset in list(self._positions.items()):
            if partitions is None or partition in partitions:
                done[(topic, partition)] = TopicPartition(topic, partition, offset + 1)
                del self._positions[(topic, partition)]
        if done:
            self._consumer.commit(offsets=list(done.values()), asynchronous=False)
        self._freeze()

    @staticmethod
    def _freeze() -> None:
        # Profiles made since the last save are long-lived too: collect the young generations (what
        # is garbage among them), then move the survivors out of the collector's view. Otherwise full
        # collections walk every profile, which measured ~10% of the stage's CPU.
        gc.collect(1)
        gc.freeze()

    def _partition(self, person: str) -> int:
        return murmur2_partition(person.encode(), self._partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = sorted({tp.partition for tp in partitions if tp.topic == self._topics["resolved"]})
        if numbers:
            started = time.monotonic()
            count = self._restore(numbers)
            log.info(
                "segments: partitions %s assigned; %d state records restored in %.1fs",
                numbers,
                count,
                time.monotonic() - started,
            )

    def _restore(self, numbers: list[int]) -> int:
        assert self._restorer is not None
        now = self.now_ms()

        def restore(msg: Message) -> None:
            value = msg.value()
            if value is None:
                return
            try:
                person, merged_into, state = decode_state(value)
                if merged_into is not None:
                    self.merged_into[person] = merged_into
                    self.profiles.pop(person, None)
                    return
                self.profiles[person] = Profile.from_json(state)
            except (SerializationError, ValueError) as exc:
                log.error("segments: unreadable state record %s/%s: %s", msg.partition(), msg.offset(), exc)

        start = [TopicPartition(self._state_topic, n, OFFSET_BEGINNING) for n in numbers]
        # The collector stays off while states are read: a replaced profile is freed by its reference
        # count (profiles hold no cycles), and the automatic passes over the growing set of restored
        # profiles cost 0.5-1.4 s of a 7-8 s restore of 100,000 profiles (BENCHMARKS.md). What other
        # threads leave in cycles meanwhile is collected just after.
        enabled = gc.isenabled()
        gc.disable()
        try:
            count = read_to_end(self._restorer, start, restore, _TIMEOUT_S)
        finally:
            if enabled:
                gc.enable()
        self._restorer.unassign()
        gc.collect()
        gc.freeze()  # the restored profiles are not garbage: keep them out of later GC passes
        wanted = set(numbers)
        for person, profile in self.profiles.items():
            if profile.due and self._partition(person) in wanted:
                heapq.heappush(self._timers, (profile.due, person))
        self._fire_timers(now)
        return count

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = {tp.partition for tp in partitions if tp.topic == self._topics["resolved"]}
        if not numbers:
            return
        self._save_and_commit(numbers)
        for person in [p for p in self.profiles if self._partition(p) in numbers]:
            del self.profiles[person]
        for person in [p for p in self.merged_into if self._partition(p) in numbers]:
            del self.merged_into[person]
        self._timers = [(due, p) for due, p in self._timers if p in self.profiles]
        heapq.heapify(self._timers)
