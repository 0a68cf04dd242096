"""The segment stage: ``events.resolved`` -> per-person profiles -> ``segments.changes``.

A :class:`SegmentStep` run by the stage runtime (:mod:`streams.kafka.runtime`). Its consumer group
``segments_group`` reads three co-partitioned topics (``events.resolved``, ``identity.changes``,
``segments.forward``, all keyed by person with the same partition count; the range assignor gives one
worker the same partition number of each), so a worker owns its persons' profiles outright
(docs/decisions/0010-co-partitioned-by-person.md).

State and recovery (docs/decisions/0008-segment-state-at-checkpoints.md)
------------------------------------------------------------------------
- Profiles live in a :class:`~streams.state.profiles.ProfileStore`: in memory, written to the
  compacted ``segments.state`` at each checkpoint and restored from it when a partition is assigned.
- A checkpoint comes every ``segments_state_flush_s``, and as soon as the input has paused for
  ``_IDLE_SAVE_S`` (so a burst's offsets are committed, and the group's lag reads zero, right after it
  is processed). Its touched profiles are written over the next turns (``Outputs.sealing``, at least as
  many per turn as events, so the loop never stalls on a big write), and its consumed offsets are
  committed once its outputs (changes, forwards, states) and those of every earlier checkpoint are
  acknowledged.
- Each profile remembers the offset of the last record applied to it, so records replayed after a
  crash are skipped by profiles whose state already has them. Changes published after the last state
  write are published again on replay with the same ``changeId`` and ``seq`` (the engine's transitions
  repeat), which ClickHouse collapses.

Merges (``identity.changes``)
-----------------------------
The survivor's owner sees the merge and sends ``merge_out`` to each merged person's owner (via
``segments.forward``, keyed by the merged person). That owner publishes the merged person's exits,
keeps a pointer (merged person -> survivor, persisted in ``segments.state``), and sends the profile in a
``merge_in`` keyed by the survivor, whose owner folds it in and re-evaluates (a merge can move the
survivor into a segment). Later events still carrying the merged id are forwarded the same way.

Erasure (docs/privacy.md): an ``erased`` identity change, keyed by each of the person's ids, makes the
id's owner publish its exits (trigger ``erasure``, without contacts), tell the audience writer to forget
it, forget the profile or merge pointer, and write a tombstone to ``segments.state``. Records for the id
that arrive after it (events resolved before the resolvers learnt of the erasure, forwards) are dropped
and counted for ``_ERASED_KEEP_S``.

Retention (docs/retention.md, "Inactive persons"): with ``segments_inactive_days`` set, a profile's
next deadline includes the day it becomes inactive; when its timer fires and the policy still says so,
the person exits every segment (trigger ``retention``), the audience writer forgets it if it held a
membership, and its profile goes: a tombstone, or only its membership counters if it ever held one.

Timers: each profile knows its next deadline (window expiry, recency, days-since thresholds); they
are checked every turn and an idle turn waits at most ``segments_timer_interval_s``, so windows expire
within about that long of their deadline with no new event (invariant 5).
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from streams.domain.experiments.assignment import Covering, RunningUseCase, covering
from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.inactivity import counters_of
from streams.domain.segments.preparation import ProductLookup
from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import Published, adopt, newer_than, unpublished
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Claim, Outputs, Refused, StageSpec, Step
from streams.settings import Settings
from streams.stages.segments.activation import ActivationFeed, facts, has_audience_identifiers
from streams.stages.segments.audience_reads import AudienceReads
from streams.stages.segments.definitions import DefinitionsFollower
from streams.state.profile_table import DiskProfiles
from streams.state.profiles import ProfileStore
from streams.topics import (
    AUDIENCE_INPUTS_TOPIC,
    IDENTITY_CHANGES_TOPIC,
    RESOLVED_TOPIC,
    SEGMENT_CHANGES_TOPIC,
    SEGMENT_FORWARD_TOPIC,
    SEGMENT_STATE_TOPIC,
)
from streams.wire.codecs import SerializationError
from streams.wire.segments import (
    decode_backfill,
    decode_forward,
    decode_merge,
    decode_resolved,
    encode_backfill,
    encode_changes,
    encode_forward,
)

log = logging.getLogger("streams.stages.segments")

_TIMEOUT_S = 60.0
_RESOLVED, _FORWARD = "r", "f"  # keys of Profile.offsets
# Profile states written per turn while a checkpoint is written (at least as many as events that turn).
_STATES_PER_TURN = 500
# Young objects are moved out of the collector's view this often: the pause is as long as the objects
# made since the last time, so often means short.
_FREEZE_EVERY_S = 0.1
# A pause in the input this long ends the checkpoint early (see the module docstring). Steady traffic
# arrives every send interval (tens of ms), so it does not trigger there.
_IDLE_SAVE_S = 0.25
# How long records for an erased person id are still dropped (in memory; a restart forgets it). Events
# resolved before the resolvers applied the erasure arrive within seconds.
_ERASED_KEEP_S = 3600.0
# Persons removed by the retention policy are reported in the log at most this often.
_RETENTION_LOG_S = 60.0


def segment_stage_spec(settings: Settings) -> StageSpec:
    """The segment stage's declaration."""
    return StageSpec(
        name="segments",
        group=settings.segments_group,
        topics=[
            settings.topic(RESOLVED_TOPIC.name),
            settings.topic(IDENTITY_CHANGES_TOPIC.name),
            settings.topic(SEGMENT_FORWARD_TOPIC.name),
        ],
        batch_size=settings.segments_batch_size,
        # Co-partitioning: the same partition number of every input topic to one worker.
        # The end of each partition is reported: recovery waits for the replay (reached_end).
        consumer={"partition.assignment.strategy": "range", "enable.partition.eof": True},
        # Room for several checkpoints in flight (changes + states) before produce() raises BufferError.
        producer={"queue.buffering.max.messages": 1_000_000},
        paced=True,
        wait_s=settings.segments_timer_interval_s,
        max_inflight=5,
        commit_every_s=0.0,
        # A state record produced again out of order could overwrite a newer one on the compacted
        # changelog: stop instead, and let the restart replay from the last commit.
        retry_failed_sends=False,
        # Profiles are long-lived: full GC passes over them cost latency.
        gc_young_threshold=50_000,
        # On disk, the store takes a checkpoint's states once they are acknowledged (where they landed).
        track_produced=settings.topic(SEGMENT_STATE_TOPIC.name) if settings.state_dir is not None else None,
    )


@dataclass
class SegmentStats:
    events: int = 0
    changes: int = 0
    timer_changes: int = 0
    forwarded: int = 0
    merges: int = 0
    skipped_replays: int = 0
    state_writes: int = 0
    recovered: int = 0  # profiles that took over changes published after their saved state
    restored_records: int = 0  # segments.state records read by restores
    audience_inputs: int = 0  # records sent to audiences.inputs
    definitions_applied: int = 0
    erasures: int = 0  # person ids erased
    dropped_erased: int = 0  # records for an erased person id, dropped
    backfill_parts: int = 0  # backfill parts applied (streams/stages/segments/backfill.py)
    retired: int = 0  # inactive persons removed (retention policy, docs/retention.md)
    retired_exits: int = 0  # memberships they exited (trigger retention)
    retired_kept_counters: int = 0  # of them, those that left their membership counters behind
    started_at: float = field(default_factory=time.monotonic)


class SegmentStep(Step):
    """Resolved events, identity merges and forwards -> profile updates -> segment changes."""

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
        self._catalog = catalog
        self._replica: Any = None
        self._topics = {
            "resolved": settings.topic(RESOLVED_TOPIC.name),
            "identity": settings.topic(IDENTITY_CHANGES_TOPIC.name),
            "forward": settings.topic(SEGMENT_FORWARD_TOPIC.name),
        }
        self._changes_topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
        self.activation = ActivationFeed(
            settings.topic(AUDIENCE_INPUTS_TOPIC.name), settings.consent_policy()
        )
        self.store = ProfileStore(settings, settings.topic(SEGMENT_STATE_TOPIC.name))
        self.profiles = self.store.profiles
        self.merged_into = self.store.merged_into
        self._dirty = self.store.dirty
        self._timers = self.store.timers
        self._to_write: list[str] = []  # the checkpoint being written, a slice per turn
        # Recovery (docs/decisions/0012): persons whose restored state is older than the changes their
        # partitions published -> those changes, until the replay of their partitions reached its end;
        # and the (topic, partition) pairs still replaying.
        self._pending: dict[str, dict[str, Published]] = {}
        self._replaying: set[tuple[str, int]] = set()
        self._engine: SegmentEngine | None = None
        self._definitions: DefinitionsFollower | None = None
        self._reads: AudienceReads | None = None
        # The running use cases, by the (segment, subject) of their audience: their changes carry arms.
        self._covered: tuple[RunningUseCase, ...] = ()
        self._covering: Covering = {}
        self._out: Outputs | None = None  # the outputs of the call in progress
        self._next_flush = 0.0
        self._next_freeze = 0.0
        self._last_input = time.monotonic()
        self._retired_unlogged = 0  # persons removed since the last retention log line
        self._next_retention_log = 0.0

    @property
    def engine(self) -> SegmentEngine:
        assert self._engine is not None, "the stage has not started"
        return self._engine

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- the step -----------------------------------------------------------------------------------

    def start(self) -> None:
        # segments.changes too: a restore reads back what its partitions published (recovery below).
        self.store.open([*self._topics.values(), self._changes_topic])
        self._definitions = DefinitionsFollower(self.settings)
        loaded = self._definitions.load()
        self._load_catalog()
        self._engine = self._build_engine()
        self._reads = AudienceReads(self.settings)
        self._reads.load()
        self.activation.reads = self._reads.segments
        self._covering = covering(self._reads.usecases)
        log.info("segments: %d definitions active (%d records read)", len(self._definitions.active), loaded)
        if self._engine.inactivity is not None:
            log.info("segments: retention removes %s", self._engine.inactivity.describe())
        now = time.monotonic()
        self._next_flush = now + self.settings.segments_state_flush_s
        self._next_freeze = now + _FREEZE_EVERY_S

    def close(self) -> None:
        self.store.close()
        if self._definitions is not None:
            self._definitions.close()
        if self._reads is not None:
            self._reads.close()
        if self._replica is not None:
            self._replica.close()

    def before_turn(self, out: Outputs) -> None:
        self._out = out
        if self._replica is not None:
            self._replica.poll()
        assert self._definitions is not None
        changed = self._definitions.poll()
        if changed:
            self._redefine(changed)
        assert self._reads is not None
        added = self._reads.poll()
        self.activation.reads = self._reads.segments
        if self._reads.usecases != self._covered:
            self._covered = self._reads.usecases
            self._covering = covering(self._covered)
        if added:
            self._send_held(added, self.store.all_profiles())
            self.store.remember_reads(self.activation.reads)

    def process(self, records: list[Any], out: Outputs) -> None:
        self._out = out
        now = self.now_ms()
        resolved_topic, forward_topic = self._topics["resolved"], self._topics["forward"]
        for msg in records:
            value = msg.value()
            if value is None:
                continue
            topic: str = msg.topic()
            offset: int = msg.offset()
            try:
                if topic == resolved_topic:
                    self._on_resolved(value, offset, now, _RESOLVED)
                elif topic == forward_topic:
                    self._on_forward(value, offset, now)
                else:
                    self._on_identity_change(value, now)
            except SerializationError as exc:
                out.refused.append(Refused(topic, msg.partition(), offset, value, str(exc)))
        if records:
            self._last_input = time.monotonic()

    def after_turn(self, handled: int, out: Outputs) -> None:
        self._out = out
        self._fire_timers(self.now_ms())
        self._log_retention()
        if self._to_write:  # at least as many states as events this turn: keeps pace
            self._write_slice(out, max(_STATES_PER_TURN, handled))
        self.store.evict()
        if time.monotonic() >= self._next_freeze:
            self._freeze()
            self._next_freeze = time.monotonic() + _FREEZE_EVERY_S

    def checkpoint_due(self, handled: int) -> bool:
        now = time.monotonic()
        idle = (
            not handled and not self.sealing and bool(self._dirty) and now - self._last_input >= _IDLE_SAVE_S
        )
        return idle or now >= self._next_flush

    def checkpoint(self, out: Outputs) -> None:
        """End the checkpoint: its touched profiles are written over the next turns.

        A profile written late may include events of the next checkpoint; that is safe, because each
        profile records the offset of the last record applied to it and a replay skips what it has.
        """
        self._out = out
        if self._pending:
            self._evaluate_recovered(out)
        self.store.close_checkpoint()
        self._to_write = self.store.take_dirty()
        self.sealing = bool(self._to_write)
        self._next_flush = time.monotonic() + self.settings.segments_state_flush_s
        self._freeze()
        self._next_freeze = time.monotonic() + _FREEZE_EVERY_S
        return None

    def finish_sealing(self, out: Outputs) -> None:
        self._write_slice(out, len(self._to_write))

    def settled(self, produced: dict[int, tuple[int, int]]) -> None:
        self.store.settled(produced)

    def flush(self, out: Outputs) -> None:
        """Every touched profile's state, now (stop, revocation)."""
        now = self.now_ms()
        dirty = self.store.take_dirty()
        out.sends.extend(self.store.changelog(person, now) for person in dirty)
        self.stats.state_writes += len(dirty)

    def assigned(self, partitions: list[tuple[str, int]], claim: Claim) -> None:
        numbers = sorted({p for topic, p in partitions if topic == self._topics["resolved"]})
        if not numbers:
            return
        started = time.monotonic()
        store = self.store
        count = store.restore(numbers)
        self.stats.restored_records += count
        self._await_published(numbers, partitions)
        self._resend_held(set(numbers))
        if not store.on_disk:  # on disk the timers are stored, and the restore scheduled its records'
            wanted = set(numbers)
            for person, profile in self.profiles.items():
                if profile.due and store.partition(person) in wanted:
                    self._timers.schedule(profile.due, person)
        self._schedule_inactive(set(numbers))
        # Timers that fell due meanwhile fire now; their changes go out with this turn's outputs.
        self._fire_timers(self.now_ms())
        log.info(
            "segments: partitions %s assigned; %d state records restored in %.1fs",
            numbers,
            count,
            time.monotonic() - started,
        )

    def _await_published(self, numbers: list[int], partitions: list[tuple[str, int]]) -> None:
        """Recovery: note the changes the partitions published after their state was saved (a crash
        between the two). The replay of the input since the last commit does not publish them again
        (:meth:`_publish`); once it reached the end of a person's partitions, the profile takes over
        what is still newer than its state and is evaluated again (:meth:`_evaluate_recovered`)."""
        published = self.store.published_since_saved(self._changes_topic, numbers)
        behind = 0
        for person, keys in published.items():
            if person in self.merged_into:
                continue  # merged away: its exits went out with the merge
            newer = newer_than(self.store.profile(person), keys)
            if newer:
                self._pending[person] = newer
                behind += 1
        if behind:
            self._replaying.update(partitions)
            self.stats.recovered += behind
            log.warning(
                "segments: %d restored profiles are older than the changes they had published; they "
                "take those changes over once the replay of their partitions is done",
                behind,
            )

    def _resend_held(self, numbers: set[int]) -> None:
        """What the audience writer was told of the restored persons is unknown: their memberships of
        read segments go again (idempotent for the writer). On disk, a profile the store already had
        was acknowledged with its inputs, so only the records the restore read, and every profile for
        read segments added since the store last sent them."""
        store, reads = self.store, self.activation.reads
        if not store.on_disk:
            self._send_held(reads, store.all_profiles(numbers))
            return
        known = store.reads_sent()
        added = reads if known is None else reads - known
        if added:
            self._send_held(added, store.all_profiles(numbers))
        rest = reads - added
        full = store.restored_full & numbers
        if rest and full:
            self._send_held(rest, store.all_profiles(full))
        if rest and store.restored_persons:
            found = (self.profiles.get(person) for person in store.restored_persons)
            self._send_held(rest, (p for p in found if p is not None))
        store.remember_reads(reads)

    def _send_held(self, segments: frozenset[str], profiles: Iterable[Profile]) -> None:
        """The memberships ``profiles`` hold of ``segments``, to the audience writer."""
        if not segments:
            return
        now, sends = self.now_ms(), self._outputs().sends
        count = 0
        for profile in profiles:
            records = self.activation.held(profile, segments, now)
            sends.extend(records)
            count += len(records)
        self.stats.audience_inputs += count
        log.info(
            "segments: %d memberships of %s sent to the audience writer", count, ", ".join(sorted(segments))
        )

    def reached_end(self, topic: str, partition: int) -> None:
        self._replaying.discard((topic, partition))

    def _evaluate_recovered(self, out: Outputs) -> None:
        """The persons whose partitions are replayed to the end take over the changes published after
        their state, and the memberships that moved are evaluated again."""
        replaying = {partition for _topic, partition in self._replaying}
        now = self.now_ms()
        reason = "recovered: state restored older than its published changes"
        for person in list(self._pending):
            if self.store.partition(person) in replaying:
                continue
            published = self._pending.pop(person)
            profile = self.profiles.get(person)
            if profile is None:
                continue  # revoked or merged since
            moved = adopt(profile, published)
            self._dirty.add(person)
            changes = self.engine.reevaluate(profile, now, "timer", reason, moved) if moved else []
            if changes:
                self._publish(profile, changes, now)
            # The crashed owner may have published changes without their audience inputs.
            resync = self.activation.resync(profile, now)
            self._outputs().sends.extend(resync)
            self.stats.audience_inputs += len(resync)
            if profile.due:
                self._timers.schedule(profile.due, person)

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        numbers = {p for topic, p in partitions if topic == self._topics["resolved"]}
        if not numbers:
            return
        self.store.drop(numbers)
        self._replaying.difference_update(partitions)
        for person in [p for p in self._pending if self.store.partition(p) in numbers]:
            del self._pending[person]
        self._timers.keep(self.profiles.__contains__)

    # -- profiles -----------------------------------------------------------------------------------

    def _write_slice(self, out: Outputs, limit: int) -> None:
        """Write up to ``limit`` states of the checkpoint being written; it ends when none are left."""
        now = self.now_ms()
        todo, changelog, sealing = self._to_write, self.store.changelog, out.sealing
        count = min(limit, len(todo))
        for _ in range(count):
            sealing.append(changelog(todo.pop(), now, True))
        self.stats.state_writes += count
        if not todo:
            self.sealing = False

    def _load_catalog(self) -> None:
        if self._catalog is not None:
            return
        from streams.stages.segments.catalog import CatalogReplica

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
            inactivity=self.settings.inactivity_policy(),
        )

    def _on_resolved(
        self, value: bytes, offset: int, now: int, source: str, person: str | None = None
    ) -> None:
        decoded_person, event = decode_resolved(value)
        person = person or decoded_person
        if person in self.store.erased:
            self.stats.dropped_erased += 1
            return
        target = self.merged_into.get(person)
        if target is not None:
            self._forward("event", target, now, from_person=person, event=value)
            return
        profile = self.store.profile(person)
        if profile.offsets.get(source, -1) >= offset:
            self.stats.skipped_replays += 1
            return
        profile.offsets[source] = offset
        self._apply(profile, event, now)

    def _apply(self, profile: Profile, event: SegmentEvent, now: int) -> None:
        due = profile.due
        # Only an event with identifiers or consent can change what audiences read of the person, and
        # the writer follows the facts only of persons with a membership of a read segment (a first
        # one brings the facts with it: ActivationFeed.memberships).
        states = bool(event.consent or (event.traits and "consent" in event.traits))
        before = None
        if (states or event.identifiers) and self.activation.reads_any(profile):
            before = facts(profile)
        if states:
            self.activation.record_consent(profile, event)
        changes = self.engine.apply(profile, event, now)
        self.stats.events += 1
        self._dirty.add(profile.person_id)
        if before is not None:
            self._send_facts_if_changed(profile, before, now)
        if changes:
            self._publish(profile, changes, now)
        if profile.due and profile.due != due:
            self._timers.schedule(profile.due, profile.person_id)

    def _send_facts_if_changed(self, profile: Profile, before: tuple[Any, Any], now: int) -> None:
        after = facts(profile)
        if after != before and (has_audience_identifiers(after) or has_audience_identifiers(before)):
            self._outputs().sends.append(self.activation.person(profile, now))
            self.stats.audience_inputs += 1

    def _on_forward(self, value: bytes, offset: int, now: int) -> None:
        kind, person, from_person, into_person, state, event = decode_forward(value)
        if person in self.store.erased:
            self.stats.dropped_erased += 1
            return
        if kind == "merge_out":
            self._merge_out(person, into_person or person, now)
            return
        if kind in ("backfill", "backfill_end"):
            self._on_backfill(kind, value, person, offset, now)
            return
        target = self.merged_into.get(person)
        if target is not None:  # the receiver was merged on in turn: pass it along
            self._forward(kind, target, now, from_person=from_person, state=state, event=event)
            return
        if kind == "event" and event is not None:
            self._on_resolved(event, offset, now, _FORWARD, person=person)
            return
        profile = self.store.profile(person)
        if profile.offsets.get(_FORWARD, -1) >= offset:
            self.stats.skipped_replays += 1
            return
        profile.offsets[_FORWARD] = offset
        if state:
            merged = Profile.from_json(state)
            merged.members.clear()  # its owner already published its exits
            merged.versions.clear()
            before = facts(profile) if self.activation.reads_any(profile) else None
            _, changes = self.engine.absorb(profile, merged, now)
            if before is not None:
                self._send_facts_if_changed(profile, before, now)
            self._dirty.add(person)
            self.stats.merges += 1
            if changes:
                self._publish(profile, changes, now)
            if profile.due:
                self._timers.schedule(profile.due, person)

    def _on_backfill(self, kind: str, value: bytes, person: str, offset: int, now: int) -> None:
        """One part of a person's backfill (streams/domain/segments/backfill.py), or the end of a run."""
        batch = decode_backfill(value)
        if kind == "backfill_end":
            self.engine.backfill_ended(batch.features)
            log.info("segments: backfill run %s ended on a partition", batch.run_id)
            return
        target = self.merged_into.get(person)
        if target is not None:  # merged since the run read the history: the survivor takes the part
            record = encode_backfill(batch, now, deliver_to=target)
            self._outputs().sends.append((self._topics["forward"], target.encode(), record))
            self.stats.forwarded += 1
            return
        profile = self.store.profile(person)
        if profile.offsets.get(_FORWARD, -1) >= offset:
            self.stats.skipped_replays += 1
            return
        profile.offsets[_FORWARD] = offset
        changes, _ = self.engine.backfill(profile, batch, now)
        self._dirty.add(person)
        self.stats.backfill_parts += 1
        if changes:
            self._publish(profile, changes, now)
        if profile.due:
            self._timers.schedule(profile.due, person)

    def _on_identity_change(self, value: bytes, now: int) -> None:
        kind, survivor, merged, message_id = decode_merge(value)
        if kind == "erased":
            self._erase(survivor, now, message_id)
            return
        if kind != "merged":
            return
        for person in merged:
            if person != survivor:
                self._forward("merge_out", person, now, into_person=survivor)

    def _erase(self, person: str, now: int, request_id: str) -> None:
        store = self.store
        profile = self.profiles.pop(person, None)
        published = self._pending.pop(person, None) if self._pending else None
        if profile is not None:
            if published:
                adopt(profile, published)  # erased while replaying: its exits follow what was published
            profile.contacts.clear()  # the exits tell email tools who left, by person id only
            changes = self.engine.erase(profile, now, request_id)
            if changes:
                self._publish(profile, changes, now)
        store.merged_into.pop(person, None)
        store.erase(person, time.monotonic() + _ERASED_KEEP_S)
        out = self._outputs()
        out.sends.append(self.activation.removed(person, now))
        out.sends.append(store.changelog(person, now))  # a tombstone
        self.stats.audience_inputs += 1
        self.stats.erasures += 1

    def _merge_out(self, person: str, survivor: str, now: int) -> None:
        if person in self.store.erased:
            self.stats.dropped_erased += 1
            return
        if person in self.merged_into or person == survivor:
            return  # replayed: already handed over
        profile = self.profiles.pop(person, None)
        published = self._pending.pop(person, None) if self._pending else None
        state = None
        if profile is not None:
            if published:
                adopt(profile, published)  # merged while replaying: its exits follow what was published
            changes = self.engine.release(profile, now, survivor)
            if changes:
                self._publish(profile, changes, now)
            state = profile.to_json()
        self._outputs().sends.append(self.activation.removed(person, now))
        self.stats.audience_inputs += 1
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
        record = encode_forward(
            kind, person, now, from_person=from_person, into_person=into_person, state=state, event=event
        )
        self._outputs().sends.append((self._topics["forward"], person.encode(), record))
        self.stats.forwarded += 1

    def _fire_timers(self, now: int) -> None:
        timers = self._timers
        for due, person in timers.due(now):
            profile = self.profiles.get(person)
            if profile is None or profile.due != due:
                continue  # stale entry: the deadline moved or the person left
            inactivity = self.engine.inactivity
            if inactivity is not None and person not in self._pending and inactivity.inactive(profile, now):
                self._retire(profile, now)
                continue
            changes = self.engine.tick(profile, now)
            self._dirty.add(person)
            if changes:
                self.stats.timer_changes += len(changes)
                self._publish(profile, changes, now)
            if profile.due:
                timers.schedule(profile.due, person)

    def _retire(self, profile: Profile, now: int) -> None:
        """Remove an inactive person: it exits every segment (trigger ``retention``), the audience
        writer forgets it if it may hold its facts (it ever held a membership), and its profile goes.
        What stays is a tombstone, or only its membership counters when it held any, so that a
        returning person's changes continue their ``seq`` (streams/domain/segments/inactivity.py)."""
        person = profile.person_id
        changes = self.engine.retire(profile, now)
        if changes:
            self._publish(profile, changes, now)
        out = self._outputs()
        if profile.members:
            out.sends.append(self.activation.removed(person, now))
            self.stats.audience_inputs += 1
        self.profiles.pop(person, None)
        left = counters_of(profile)
        if left is None:
            self._dirty.discard(person)
            if self.store.on_disk:
                # The stored profile stays until the tombstone is acknowledged: until then, lookups
                # must find the tombstone (else the changelog record would be the stored profile).
                self.store.unsaved.add(person, None, False)
            out.sends.append(self.store.changelog(person, now))  # a tombstone
        else:
            self.profiles[person] = left
            self._dirty.add(person)
            self.stats.retired_kept_counters += 1
        self.stats.retired += 1
        self.stats.retired_exits += len(changes)
        self._retired_unlogged += 1

    def _schedule_inactive(self, numbers: set[int]) -> None:
        """With a retention policy, a restored profile whose due misses its retention deadline (saved
        before the policy was set, or under a longer one) gets it now: its timer fires then."""
        inactivity = self.engine.inactivity
        if inactivity is None:
            return
        store = self.store
        profiles: Iterable[Profile]
        if store.on_disk and store.note(b"i") == inactivity.describe().encode():
            # The store's profiles were given deadlines under this policy before, and every profile
            # saved since has it in its due: only those the restore read are looked at.
            found = (self.profiles.get(person) for person in store.restored_persons)
            profiles = itertools.chain(
                store.all_profiles(store.restored_full & numbers), (p for p in found if p is not None)
            )
        else:
            profiles = store.all_profiles(numbers)
        now, count = self.now_ms(), 0
        for profile in profiles:
            deadline = inactivity.deadline(profile)
            if deadline is None:
                continue
            deadline = max(deadline, now + 1)
            if profile.due and profile.due <= deadline:
                continue
            profile.due = deadline
            self._dirty.add(profile.person_id)
            self._timers.schedule(deadline, profile.person_id)
            count += 1
        if count:
            log.info("segments: %d restored profiles given their retention deadline", count)
        if store.on_disk:
            store.remember(b"i", inactivity.describe().encode())

    def _log_retention(self) -> None:
        """One line per ``_RETENTION_LOG_S`` while the retention policy removes persons."""
        if not self._retired_unlogged or time.monotonic() < self._next_retention_log:
            return
        log.info(
            "segments: retention removed %d inactive persons (%s); %d in all, %d memberships exited",
            self._retired_unlogged,
            self.engine.inactivity.describe() if self.engine.inactivity is not None else "off",
            self.stats.retired,
            self.stats.retired_exits,
        )
        self._retired_unlogged = 0
        self._next_retention_log = time.monotonic() + _RETENTION_LOG_S

    def _redefine(self, changed: set[str]) -> None:
        assert self._definitions is not None
        previous = self._engine
        self._engine = self._build_engine()
        self._engine.await_backfill(self._engine.new_features(previous))
        now = self.now_ms()
        versions = ", ".join(
            f"{sid} v{self._definitions.active[sid][1]}"
            if sid in self._definitions.active
            else f"{sid} removed"
            for sid in sorted(changed)
        )
        total = self.store.count()
        log.info("segments: definitions changed (%s); re-evaluating %d profiles", versions, total)
        started = time.monotonic()
        index = 0
        for index, profile in enumerate(self.store.all_profiles(), 1):
            due = profile.due
            changes = self.engine.reevaluate(
                profile, now, "definition", f"definitions changed: {versions}", changed
            )
            if changes:
                self._publish(profile, changes, now)
            if changes or profile.due != due:  # on disk, an unwritten change is lost when evicted
                self._dirty.add(profile.person_id)
            if profile.due:
                self._timers.schedule(profile.due, profile.person_id)
            if index % 100_000 == 0:
                log.info("segments: re-evaluated %d of about %d profiles", index, total)
        self.stats.definitions_applied += 1
        log.info("segments: re-evaluated %d profiles in %.1fs", index, time.monotonic() - started)

    def _publish(self, profile: Profile, changes: list[Change], now: int) -> None:
        if self._pending:
            published = self._pending.get(profile.person_id)
            if published is not None:
                changes = unpublished(changes, published)  # a replay after a crash
                if not changes:
                    return
        send = self._outputs().sends.append
        key = profile.person_id.encode()
        topic = self._changes_topic
        for record in encode_changes(changes, profile, now, self._covering):
            send((topic, key, record))
        self.stats.changes += len(changes)
        inputs = self.activation.memberships(profile, changes, now)
        self._outputs().sends.extend(inputs)
        self.stats.audience_inputs += len(inputs)

    def _outputs(self) -> Outputs:
        assert self._out is not None, "outputs are emitted only inside the runtime's calls"
        return self._out

    @staticmethod
    def _freeze() -> None:
        # Profiles made since the last time are long-lived too: collect the young generations (what
        # is garbage among them), then move the survivors out of the collector's view, so full
        # collections do not walk every profile.
        gc.collect(1)
        gc.freeze()


class SegmentStage(StageRuntime):
    """The segment stage: :class:`SegmentStep` run by the stage runtime."""

    step: SegmentStep

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        catalog: ProductLookup | None = None,
    ) -> None:
        super().__init__(
            settings, segment_stage_spec(settings), SegmentStep(settings, clock=clock, catalog=catalog)
        )

    @property
    def stats(self) -> SegmentStats:
        return self.step.stats

    @property
    def profiles(self) -> dict[str, Profile] | DiskProfiles:
        return self.step.profiles

    @property
    def merged_into(self) -> dict[str, str]:
        return self.step.merged_into
