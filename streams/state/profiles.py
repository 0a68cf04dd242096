"""Keyed state: the segment stage's per-person profiles, their changelog topic and their restore.

A worker owns the persons of the partitions it is assigned (the person-keyed topics are
co-partitioned: same partition count, range assignor; docs/decisions/0010-co-partitioned-by-person.md).
Their profiles are written, whole, to the compacted ``segments.state`` (same partition number as the
person's); a partition that is assigned is restored from it before any of its records are processed.
A merged person's record says where it went instead of holding a profile; an erased person's record
is a tombstone (its earlier records no longer count).

Two homes for the profiles (docs/state.md):

- in memory (``state_dir`` unset): a dict; a restore reads the whole changelog partition;
- on local disk (``state_dir`` set): RocksDB with a bounded cache of decoded profiles
  (:mod:`streams.state.profile_table`). A record goes to the store once the checkpoint that produced
  it is acknowledged (:meth:`ProfileStore.settled`), with the changelog position it reached, so a
  restore on the same disk reads only the records after that position, after checking that the
  changelog still has the record just before it (else, and when the position is older than
  ``_TRUST_POSITION_MS``, it reads the partition in full).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterable, Iterator

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import Published, membership_key, newest
from streams.kafka.config import consumer_config
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.stage import Send
from streams.settings import Settings
from streams.state.profile_table import (
    POINTER,
    POSITION,
    PROFILE,
    DiskProfiles,
    Position,
    Unsaved,
    partition_range,
    put_record,
)
from streams.state.rocks import Rdict, batch, open_free_slot
from streams.state.timers import DiskTimers, Timers
from streams.wire.codecs import SEGMENT_CHANGE_CODEC, SerializationError
from streams.wire.segments import decode_state, encode_state

log = logging.getLogger("streams.state.profiles")

_TIMEOUT_S = 60.0
# How far before the newest saved state of a partition its published changes are read back on
# restore: a checkpoint's states are written over several turns after its changes, and producer
# clocks differ a little.
_PUBLISHED_MARGIN_MS = 60_000
# A store position older than this is not trusted: a compacted changelog drops a tombstone (an erased
# person) some time after Kafka's delete.retention.ms (24 h by default), and a store that missed it
# would keep the person. Half of that default.
_TRUST_POSITION_MS = 12 * 3600 * 1000
# Records applied to the store per write batch during a restore.
_RESTORE_BATCH = 5_000
_READS_KEY = b"r"
_NOTE = b"n"
# How long the check of a stored position waits for the record before it (see _check_position).
_CHECK_TIMEOUT_S = 10.0


class _Diverged(Exception):
    """The changelog no longer has, at the store's position, the record the store saw there."""


class ProfileStore:
    """Profiles and merge pointers of the persons this worker owns, with the touched ones since the
    last write (``dirty``)."""

    def __init__(self, settings: Settings, changelog_topic: str) -> None:
        self.settings = settings
        self.changelog_topic = changelog_topic
        self.merged_into: dict[str, str] = {}
        self.dirty: set[str] = set()
        self.writing: set[str] = set()  # taken by take_dirty, state not yet produced
        # Erased person ids -> until when (monotonic seconds) records for them are dropped.
        self.erased: dict[str, float] = {}
        self.partitions = 0
        # Per restored partition: the newest timestamp of its state records (0: none).
        self.saved_at: dict[int, int] = {}
        self._restorer: Consumer | None = None
        # What the last restore read: partitions read in full, and the persons whose records it
        # applied in the others (on disk; in memory every partition is read in full).
        self.restored_full: set[int] = set()
        self.restored_persons: set[str] = set()
        self.unsaved = Unsaved()
        # The timers' floor per owned partition at each checkpoint not yet settled.
        self._floors: list[dict[int, int]] = []
        self.db: Rdict | None = None
        self.profiles: dict[str, Profile] | DiskProfiles
        self.timers: Timers | DiskTimers
        if settings.state_dir is None:
            self.profiles, self.timers = {}, Timers()
        else:
            path, self.db = open_free_slot(settings.state_dir, "segments", settings.segments_group)
            log.info(
                "segments: profiles on disk at %s, %d kept in memory", path, settings.segments_cache_profiles
            )
            self.profiles = DiskProfiles(
                self.db, self.partition, settings.segments_cache_profiles, self.unsaved, self._gone
            )
            self.timers = DiskTimers(self.db, self.partition, self.profiles.owned)

    @property
    def on_disk(self) -> bool:
        return self.db is not None

    def _gone(self, person: str) -> bool:
        return person in self.merged_into or person in self.erased

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
            self._restorer = None
        if self.db is not None:
            self.db.flush()  # no write-ahead log: the memtables go to disk now (streams/state/rocks.py)
            self.db.close()
            self.db = None

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

    def changelog(self, person: str, now: int, sealing: bool = False) -> Send:
        """The ``segments.state`` record of ``person``: the profile, where it was merged, or a tombstone
        (erased: neither). ``sealing``: it belongs to the checkpoint being written (not the current)."""
        target = self.merged_into.get(person)
        profile = None if target is not None else self.profiles.get(person)
        value = None if target is None and profile is None else encode_state(person, profile, target, now)
        if self.db is not None:
            self.unsaved.add(person, value, sealing)
            self.writing.discard(person)
        return self.changelog_topic, person.encode(), value

    def take_dirty(self) -> list[str]:
        """The touched persons, emptied; in memory order, last first (written with ``pop()``).

        A profile's objects lie near each other and near its neighbours', so a sweep by address finds
        more of them cached than hash order does; the sort is one short pause per write.
        """
        profiles = self.profiles
        if isinstance(profiles, DiskProfiles):
            touched = list(self.dirty)
            self.writing.update(touched)
        else:
            touched = sorted(self.dirty, key=lambda person: id(profiles.get(person)), reverse=True)
        self.dirty.clear()
        return touched

    # -- on disk: checkpoints, acknowledgements, the cache ------------------------------------------

    def close_checkpoint(self) -> None:
        """The current checkpoint ends (the stage's ``checkpoint``): its records, and those written
        while it seals, wait for its acknowledgement."""
        if self.db is not None:
            self.unsaved.close()
            self._floors.append(self.timers.floors() if isinstance(self.timers, DiskTimers) else {})

    def settled(self, produced: dict[int, tuple[int, int]]) -> None:
        """The oldest open checkpoint is acknowledged: its records go to the store, with the position
        each changelog partition reached."""
        db = self.db
        if db is None:
            return
        records = self.unsaved.take_oldest()
        floors = self._floors.pop(0) if self._floors else {}
        wb = batch()
        partition = self.partition
        for person, value in records.items():
            put_record(wb, partition(person), person, value)
        now = int(time.time() * 1000)
        for number, (offset, stamp) in produced.items():
            wb.put(POSITION + number.to_bytes(2, "big"), Position(offset + 1, stamp, now).encode())
        if isinstance(self.timers, DiskTimers):
            self.timers.settle(floors, wb)
        db.write(wb)

    def pinned(self, person: str) -> bool:
        return person in self.dirty or person in self.writing

    def evict(self) -> int:
        """Keep the cache within its size (on disk); returns the profiles dropped from memory."""
        profiles = self.profiles
        if isinstance(profiles, DiskProfiles) and len(profiles) > profiles.capacity:
            return profiles.evict(self.pinned)
        return 0

    def all_profiles(self, numbers: set[int] | None = None) -> Iterator[Profile]:
        """Every profile of partitions ``numbers`` (all owned ones: None), in memory or on disk."""
        profiles = self.profiles
        if isinstance(profiles, DiskProfiles):
            wanted = set(profiles.owned) if numbers is None else numbers
            yield from profiles.scan(wanted, 10_000, self.evict)
            return
        for person, profile in list(profiles.items()):
            if numbers is None or self.partition(person) in numbers:
                yield profile

    def count(self) -> int:
        """The profiles held: exact in memory, RocksDB's estimate on disk."""
        profiles = self.profiles
        return profiles.estimate() if isinstance(profiles, DiskProfiles) else len(profiles)

    def note(self, name: bytes) -> bytes | None:
        """A value the stage kept in the store under ``name`` (None in memory or when none)."""
        return self.db.get(_NOTE + name) if self.db is not None else None

    def remember(self, name: bytes, value: bytes) -> None:
        if self.db is not None:
            self.db.put(_NOTE + name, value)

    def reads_sent(self) -> frozenset[str] | None:
        """The audience-read segments whose memberships the store's profiles were last sent for (on
        disk; None: unknown, send them all)."""
        raw = self.db.get(_READS_KEY) if self.db is not None else None
        return frozenset(orjson.loads(raw)) if raw is not None else None

    def remember_reads(self, segments: frozenset[str]) -> None:
        if self.db is not None:
            self.db.put(_READS_KEY, orjson.dumps(sorted(segments)))

    def restore(self, numbers: list[int]) -> int:
        """Restore the changelog partitions ``numbers``; returns the records read."""
        self.restored_persons = set()
        if isinstance(self.profiles, DiskProfiles):
            self.profiles.owned.update(numbers)
            self.restored_full = set()
            return self._restore_on_disk(numbers)
        self.restored_full = set(numbers)
        return self._restore_in_memory(numbers)

    def _restore_in_memory(self, numbers: list[int]) -> int:
        """Read the changelog partitions ``numbers`` from the beginning into memory."""
        assert self._restorer is not None
        assert isinstance(self.profiles, dict)
        profiles = self.profiles

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
                profiles.pop(key, None)
                self.merged_into.pop(key, None)
                return
            try:
                person, merged_into, state = decode_state(value)
                if merged_into is not None:
                    self.merged_into[person] = merged_into
                    profiles.pop(person, None)
                    return
                profiles[person] = Profile.from_json(state)
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

    def _restore_on_disk(self, numbers: list[int]) -> int:
        """Bring the store's entries of changelog partitions ``numbers`` up to their end: from the
        stored position where the changelog still agrees with it, else from the beginning."""
        db = self.db
        assert db is not None
        now = int(time.time() * 1000)
        positions: dict[int, Position] = {}
        for number in numbers:
            raw = db.get(POSITION + number.to_bytes(2, "big"))
            position = Position.decode(raw) if raw is not None else None
            if position is not None and now - position.written_at > _TRUST_POSITION_MS:
                log.info(
                    "segments: the stored state of partition %d is too old to trust; reading it all", number
                )
            elif position is not None and position.offset > 0:
                positions[number] = position
        for number, reason in self._check_positions(positions).items():
            log.warning("segments: partition %d: %s; reading it all", number, reason)
            del positions[number]
        count = 0
        for number in numbers:
            position = positions.get(number)
            if position is not None:
                try:
                    count += self._read_changelog(number, position)
                    continue
                except _Diverged as exc:  # changed since the check
                    log.warning("segments: partition %d: %s; reading it all", number, exc)
            self._wipe(number)
            count += self._read_changelog(number, None)
        return count

    def _wipe(self, number: int) -> None:
        """Forget the store's entries of partition ``number`` (it is read in full next)."""
        assert self.db is not None
        for prefix in (PROFILE, POINTER):
            self.db.delete_range(*partition_range(prefix, number))
        for person in [p for p in self.merged_into if self.partition(p) == number]:
            del self.merged_into[person]
        if isinstance(self.timers, DiskTimers):
            self.timers.forget(number)
            for floors in self._floors:  # an older checkpoint's floor must not drop the new entries
                floors.pop(number, None)
        self.restored_full.add(number)

    def _check_positions(self, positions: dict[int, Position]) -> dict[int, str]:
        """The partitions whose changelog no longer holds, at ``offset - 1``, the record the store saw
        there, with why. The consumer reports an offset out of range instead of moving to another: a
        changelog shorter than the position has no record there (Kafka says so; Tansu answers
        nothing, hence the short wait: a record that is there comes at once)."""
        if not positions:
            return {}
        checker = Consumer(
            consumer_config(
                self.settings,
                f"{self.settings.segments_group}.restore",  # assign only, never committed
                "omniseg-segments-restore-check",
                **{"enable.partition.eof": True, "auto.offset.reset": "error"},
            )
        )
        topic = self.changelog_topic
        waiting = dict(positions)
        diverged: dict[int, str] = {}
        try:
            checker.assign([TopicPartition(topic, n, p.offset - 1) for n, p in positions.items()])
            deadline = time.monotonic() + _CHECK_TIMEOUT_S
            while waiting and time.monotonic() < deadline:
                msg = checker.poll(0.2)
                if msg is None:
                    continue
                number: int = msg.partition()  # type: ignore[assignment]
                position = waiting.pop(number, None)
                if position is None:
                    continue
                error, offset = msg.error(), position.offset - 1
                if error is not None:
                    diverged[number] = f"the changelog has no record at offset {offset} ({error.str()})"
                elif msg.offset() != offset or msg.timestamp()[1] != position.timestamp:
                    diverged[number] = (
                        f"the changelog no longer has at offset {offset} the record the store saw there "
                        "(recreated or compacted)"
                    )
        finally:
            checker.close()
        for number, position in waiting.items():
            diverged[number] = (
                f"the changelog gave nothing at offset {position.offset - 1} within {_CHECK_TIMEOUT_S:.0f}s"
            )
        return diverged

    def _read_changelog(self, number: int, position: Position | None) -> int:
        """Apply the records of partition ``number`` after ``position`` (all: None) to the store."""
        db, restorer, timers = self.db, self._restorer, self.timers
        assert db is not None and restorer is not None
        full = position is None
        start = OFFSET_BEGINNING if position is None else position.offset - 1
        last = (position.offset - 1, position.timestamp) if position is not None else (-1, 0)
        checked = full
        wb, pending = batch(), 0
        persons = self.restored_persons

        def apply(msg: Message) -> None:
            nonlocal last, checked, wb, pending
            offset: int = msg.offset()  # type: ignore[assignment]
            stamp = msg.timestamp()[1]
            if not checked:  # the record the store saw last must still be there
                if position is not None and (offset != position.offset - 1 or stamp != position.timestamp):
                    raise _Diverged(
                        f"the changelog has no longer at offset {position.offset - 1} the record the "
                        "store saw there (recreated or compacted)"
                    )
                checked = True
                return
            last = (offset, stamp)
            value = msg.value()
            person = (msg.key() or b"").decode()
            put_record(wb, number, person, value)
            pending += 1
            if value is None:
                self.merged_into.pop(person, None)
            else:
                try:
                    _person, merged_into, state = decode_state(value)
                except SerializationError as exc:
                    log.error("segments: unreadable state record %s/%s: %s", number, offset, exc)
                    return
                if merged_into is not None:
                    self.merged_into[person] = merged_into
                else:
                    self.merged_into.pop(person, None)
                    due = orjson.loads(state).get("due") or 0
                    if due:
                        timers.schedule(due, person)
                    if not full:
                        persons.add(person)
            if pending >= _RESTORE_BATCH:
                db.write(wb)
                wb, pending = batch(), 0

        try:
            count = read_to_end(
                restorer, [TopicPartition(self.changelog_topic, number, start)], apply, _TIMEOUT_S
            )
        finally:
            restorer.unassign()
        if not checked:
            raise _Diverged(f"the changelog ends before offset {start}, the store's position")
        now = int(time.time() * 1000)
        offset, stamp = last
        if offset >= 0:
            wb.put(POSITION + number.to_bytes(2, "big"), Position(offset + 1, stamp, now).encode())
        db.write(wb)
        self.saved_at[number] = stamp
        # The partition's merge pointers stay in memory (a small share of persons; read on every record).
        begin, end = partition_range(POINTER, number)
        it = db.iter()
        it.seek(begin)
        while it.valid() and bytes(it.key()) < end:
            person, merged_into, _state = decode_state(bytes(it.value()))
            if merged_into is not None:
                self.merged_into[person] = merged_into
            it.next()
        return count - (0 if full else 1)

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
        """Forget the persons of partitions ``numbers`` (revoked; their state is on the changelog, and
        on disk it stays in the store for when they come back)."""
        profiles = self.profiles
        if isinstance(profiles, DiskProfiles):
            profiles.drop(numbers)
        else:
            for person in [p for p in profiles if self.partition(p) in numbers]:
                del profiles[person]
        for person in [p for p in self.merged_into if self.partition(p) in numbers]:
            del self.merged_into[person]
