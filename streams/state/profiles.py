"""Keyed state: the segment stage's per-person profiles, their changelog topic and their restore.

A worker owns the persons of the partitions it is assigned (the person-keyed topics are
co-partitioned: same partition count, range assignor; docs/decisions/0010-co-partitioned-by-person.md).
Their profiles live in memory and are written, whole, to the compacted ``segments.state`` (same
partition number as the person's); a partition that is assigned is restored from it before any of its
records are processed. A merged person's record says where it went instead of holding a profile; an
erased person's record is a tombstone (its earlier records no longer count).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterable

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import Published, membership_key, newest
from streams.kafka.config import consumer_config
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.stage import Send
from streams.settings import Settings
from streams.wire.codecs import SEGMENT_CHANGE_CODEC, SerializationError
from streams.wire.segments import decode_state, encode_state

log = logging.getLogger("streams.state.profiles")

_TIMEOUT_S = 60.0
# How far before the newest saved state of a partition its published changes are read back on
# restore: a checkpoint's states are written over several turns after its changes, and producer
# clocks differ a little.
_PUBLISHED_MARGIN_MS = 60_000


class ProfileStore:
    """Profiles and merge pointers of the persons this worker owns, with the touched ones since the
    last write (``dirty``)."""

    def __init__(self, settings: Settings, changelog_topic: str) -> None:
        self.settings = settings
        self.changelog_topic = changelog_topic
        self.profiles: dict[str, Profile] = {}
        self.merged_into: dict[str, str] = {}
        self.dirty: set[str] = set()
        # Erased person ids -> until when (monotonic seconds) records for them are dropped.
        self.erased: dict[str, float] = {}
        self.partitions = 0
        # Per restored partition: the newest timestamp of its state records (0: none).
        self.saved_at: dict[int, int] = {}
        self._restorer: Consumer | None = None

    def open(self, keyed_topics: Iterable[str]) -> None:
        """Check that ``keyed_topics`` and the changelog are co-partitioned; prepare the restore reader."""
        self._restorer = Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.segments_group}.restore",  # assign only, never committed
                "omniseg-segments-restore",
                **{"enable.partition.eof": True, "isolation.level": "read_uncommitted"},
            )
        )
        counts = {
            topic: len(partitions_of(self._restorer, topic, _TIMEOUT_S))
            for topic in [*keyed_topics, self.changelog_topic]
        }
        if len(set(counts.values())) != 1:
            raise RuntimeError(
                "segments: the person-keyed topics must have the same partition count to be "
                f"co-partitioned, found {counts}; recreate them with one count (omniseg topics create)"
            )
        self.partitions = next(iter(counts.values()))

    def close(self) -> None:
        if self._restorer is not None:
            with contextlib.suppress(RuntimeError):
                self._restorer.close()

    def profile(self, person: str) -> Profile:
        """The person's profile (a new one if this worker has none)."""
        profile = self.profiles.get(person)
        if profile is None:
            profile = self.profiles[person] = Profile(person)
        return profile

    def partition(self, person: str) -> int:
        return murmur2_partition(person.encode(), self.partitions)

    def erase(self, person: str, until: float) -> None:
        """Forget ``person`` (erased): its profile, pointer and pending write; drop its records until
        ``until``. Expired entries are pruned here."""
        self.profiles.pop(person, None)
        self.merged_into.pop(person, None)
        self.dirty.discard(person)
        erased = self.erased
        if erased:
            now = time.monotonic()
            for old in [p for p, deadline in erased.items() if deadline <= now]:
                del erased[old]
        erased[person] = until

    def changelog(self, person: str, now: int) -> Send:
        """The ``segments.state`` record of ``person``: the profile, where it was merged, or a tombstone
        (erased: neither)."""
        target = self.merged_into.get(person)
        profile = None if target is not None else self.profiles.get(person)
        if target is None and profile is None:  # erased (or never kept): nothing to restore
            return self.changelog_topic, person.encode(), None
        return self.changelog_topic, person.encode(), encode_state(person, profile, target, now)

    def take_dirty(self) -> list[str]:
        """The touched persons, emptied; in memory order, last first (written with ``pop()``).

        A profile's objects lie near each other and near its neighbours', so a sweep by address finds
        more of them cached than hash order does; the sort is one short pause per write.
        """
        profiles = self.profiles
        touched = sorted(self.dirty, key=lambda person: id(profiles.get(person)), reverse=True)
        self.dirty.clear()
        return touched

    def restore(self, numbers: list[int]) -> int:
        """Read the changelog partitions ``numbers`` from the beginning; returns the records read."""
        assert self._restorer is not None

        saved_at = self.saved_at
        for number in numbers:
            saved_at[number] = 0

        def restore(msg: Message) -> None:
            value = msg.value()
            _kind, stamp = msg.timestamp()
            partition: int = msg.partition()  # type: ignore[assignment]
            if stamp > saved_at[partition]:
                saved_at[partition] = stamp
            if value is None:  # an erased person: forget what earlier records said
                key = (msg.key() or b"").decode()
                self.profiles.pop(key, None)
                self.merged_into.pop(key, None)
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

        start = [TopicPartition(self.changelog_topic, n, OFFSET_BEGINNING) for n in numbers]
        # The collector stays off while states are read: its passes over the growing set of restored
        # profiles would cost a good part of the restore (docs/decisions/0005-gc-and-long-lived-state.md).
        # Profiles hold no cycles, so a replaced one is freed by its reference count; what other threads
        # leave in cycles meanwhile is collected just after.
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
        return count

    def published_since_saved(
        self, changes_topic: str, numbers: list[int], margin_ms: int = _PUBLISHED_MARGIN_MS
    ) -> dict[str, dict[str, Published]]:
        """The newest change per person and membership key that ``changes_topic`` (co-partitioned)
        holds for partitions ``numbers`` from shortly before their newest saved state (all of it for
        a partition without state): what may have been published after a state was saved."""
        assert self._restorer is not None
        since = [
            TopicPartition(changes_topic, n, max(0, self.saved_at.get(n, 0) - margin_ms)) for n in numbers
        ]
        starts = [
            tp
            for tp in self._restorer.offsets_for_times(since, _TIMEOUT_S)
            if tp.offset >= 0  # -1: nothing as new as that
        ]
        seen: list[tuple[str, str, int, int]] = []

        def read(msg: Message) -> None:
            value = msg.value()
            if value is None:
                return
            try:
                change = SEGMENT_CHANGE_CODEC.decode(value)
            except SerializationError as exc:
                log.error("segments: unreadable change %s/%s: %s", msg.partition(), msg.offset(), exc)
                return
            key = membership_key(change["segmentId"], change["subject"])
            seen.append((change["personId"], key, change["seq"], change["definitionVersion"]))

        if starts:
            read_to_end(self._restorer, starts, read, _TIMEOUT_S)
            self._restorer.unassign()
        return newest(seen)

    def drop(self, numbers: set[int]) -> None:
        """Forget the persons of partitions ``numbers`` (revoked; their state is on the changelog)."""
        for person in [p for p in self.profiles if self.partition(p) in numbers]:
            del self.profiles[person]
        for person in [p for p in self.merged_into if self.partition(p) in numbers]:
            del self.merged_into[person]
