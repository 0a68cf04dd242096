"""Profiles on local disk (RocksDB) behind a bounded cache of decoded ones (``state_dir`` set).

Layout (keys are bytes; ``PP`` is the person's partition, two bytes big-endian, so one partition's
entries are one key range):

- ``p PP person`` -> the person's ``segments.state`` record (a profile);
- ``m PP person`` -> the person's ``segments.state`` record (a merge pointer);
- ``c PP``        -> the changelog position of the partition (:class:`Position`);
- ``t PP due person`` and ``f PP`` -> the timer index and its floor (:mod:`streams.state.timers`);
- ``r``           -> the segments audiences read, as last sent, and ``n name`` -> notes of the stage
  (:mod:`streams.state.profiles`).

The store holds only what the changelog holds: records are written to it once the checkpoint that
produced them is acknowledged (:class:`Unsaved` keeps them until then, where lookups find them), so
it never runs ahead of ``segments.state``, and it can always be rebuilt from it.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from streams.domain.segments.profile import Profile
from streams.state.rocks import Rdict, WriteBatch
from streams.wire.segments import decode_state

PROFILE, POINTER, POSITION = b"p", b"m", b"c"
_PART = struct.Struct(">H")
_POSITION = struct.Struct(">qqq")


def key(prefix: bytes, partition: int, person: str) -> bytes:
    return prefix + _PART.pack(partition) + person.encode()


def partition_range(prefix: bytes, partition: int) -> tuple[bytes, bytes]:
    """The key range [begin, end) of one partition's entries under ``prefix``."""
    return prefix + _PART.pack(partition), prefix + _PART.pack(partition + 1)


def put_record(batch: WriteBatch, partition: int, person: str, value: bytes | None) -> None:
    """Apply one ``segments.state`` record (``None``: a tombstone) to the store's entries of ``person``.

    A person's profile record is followed only by profiles, then at most once by a merge pointer, and
    a tombstone ends both: so a profile is one put (no delete of a pointer that cannot be there, which
    would leave a tombstone in RocksDB for every write)."""
    profile_key = key(PROFILE, partition, person)
    if value is None:
        batch.delete(profile_key)
        batch.delete(key(POINTER, partition, person))
        return
    _person, merged_into, _state = decode_state(value)
    if merged_into is None:
        batch.put(profile_key, value)
    else:
        batch.put(key(POINTER, partition, person), value)
        batch.delete(profile_key)


@dataclass(frozen=True)
class Position:
    """Where the store stands on one changelog partition: every record before ``offset`` is in it.

    ``timestamp`` is the record at ``offset - 1``'s, the newest state the store has of the partition (a
    changelog that no longer has that record there was recreated or compacted past it: the store
    cannot trust its entries); ``written_at`` is when the position was written (wall clock, ms)."""

    offset: int
    timestamp: int
    written_at: int

    def encode(self) -> bytes:
        return _POSITION.pack(self.offset, self.timestamp, self.written_at)

    @classmethod
    def decode(cls, raw: bytes) -> Position:
        return cls(*_POSITION.unpack(raw))


class Unsaved:
    """``segments.state`` records produced but not yet acknowledged, per checkpoint, oldest first:
    ``open`` (the current checkpoint) and ``closed`` (checkpoints waiting for their acks)."""

    __slots__ = ("closed", "open")

    def __init__(self) -> None:
        self.open: dict[str, bytes | None] = {}
        self.closed: list[dict[str, bytes | None]] = []

    def close(self) -> None:
        """The current checkpoint ends; records written while it seals go to it (``sealing``)."""
        self.closed.append(self.open)
        self.open = {}

    def add(self, person: str, value: bytes | None, sealing: bool) -> None:
        (self.closed[-1] if sealing and self.closed else self.open)[person] = value

    def take_oldest(self) -> dict[str, bytes | None]:
        return self.closed.pop(0) if self.closed else {}

    def find(self, person: str) -> tuple[bool, bytes | None]:
        """The newest unsaved record of ``person``: (found, value)."""
        if person in self.open:
            return True, self.open[person]
        for batch in reversed(self.closed):
            if person in batch:
                return True, batch[person]
        return False, None

    def clear(self) -> None:
        self.open = {}
        self.closed = []


class DiskProfiles:
    """The owned partitions' profiles: decoded ones in an LRU cache of ``capacity``, the rest in the
    store (or still in :class:`Unsaved`). Reads only what it owns (``owned``); a person with a merge
    pointer or erased (``gone``) has no profile."""

    def __init__(
        self,
        db: Rdict,
        partition_of: Callable[[str], int],
        capacity: int,
        unsaved: Unsaved,
        gone: Callable[[str], bool],
    ) -> None:
        self._db = db
        self._partition_of = partition_of
        self.capacity = capacity
        self._unsaved = unsaved
        self._gone = gone
        self._cache: OrderedDict[str, Profile] = OrderedDict()
        self.owned: set[int] = set()
        self.loads = 0  # profiles read from disk (cache misses that found one)
        self.evictions = 0

    def __len__(self) -> int:
        """Profiles in the cache (the store's count is :meth:`estimate`)."""
        return len(self._cache)

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __contains__(self, person: object) -> bool:
        return isinstance(person, str) and self.get(person) is not None

    def __getitem__(self, person: str) -> Profile:
        profile = self.get(person)
        if profile is None:
            raise KeyError(person)
        return profile

    def __setitem__(self, person: str, profile: Profile) -> None:
        self._cache[person] = profile

    def get(self, person: str, default: Profile | None = None) -> Profile | None:
        cache = self._cache
        profile = cache.get(person)
        if profile is not None:
            cache.move_to_end(person)
            return profile
        profile = self._load(person)
        return default if profile is None else profile

    def pop(self, person: str, default: Profile | None = None) -> Profile | None:
        """The person's profile, out of the cache (the caller then writes its pointer or tombstone,
        and marks it ``gone`` meanwhile)."""
        profile = self._cache.pop(person, None)
        if profile is None:
            profile = self._load(person, keep=False)
        return default if profile is None else profile

    def values(self) -> Iterator[Profile]:
        """The cached profiles only (every owned profile: :meth:`scan`)."""
        return iter(list(self._cache.values()))

    def items(self) -> Iterator[tuple[str, Profile]]:
        return iter(list(self._cache.items()))

    def _load(self, person: str, keep: bool = True) -> Profile | None:
        partition = self._partition_of(person)
        if partition not in self.owned or self._gone(person):
            return None
        found, value = self._unsaved.find(person)
        if not found:
            value = self._db.get(key(PROFILE, partition, person))
        if value is None:
            return None
        _person, merged_into, state = decode_state(value)
        if merged_into is not None:
            return None
        profile = Profile.from_json(state)
        self.loads += 1
        if keep:
            self._cache[person] = profile
        return profile

    def scan(self, partitions: set[int], every: int, pause: Callable[[], object]) -> Iterator[Profile]:
        """Every profile of ``partitions`` (cached, unsaved or on disk), through the cache: a caller
        may change one and mark it dirty. ``pause`` runs every ``every`` profiles (eviction, progress).
        """
        wanted = partitions & self.owned
        partition_of = self._partition_of
        # First those in memory (the cache and the unsaved records): the disk may hold an older state.
        first = {p for p in self._cache if partition_of(p) in wanted}
        first.update(p for batch in (*self._unsaved.closed, self._unsaved.open) for p in batch)
        count = 0
        for person in first:
            profile = self.get(person) if partition_of(person) in wanted else None
            if profile is not None:
                yield profile
                count += 1
                if count % every == 0:
                    pause()
        for partition in sorted(wanted):
            begin, end = partition_range(PROFILE, partition)
            it = self._db.iter()
            it.seek(begin)
            while it.valid():
                raw = bytes(it.key())
                if raw >= end:
                    break
                person = raw[3:].decode()
                it.next()
                if person in first:
                    continue
                profile = self.get(person)
                if profile is not None:
                    yield profile
                    count += 1
                    if count % every == 0:
                        pause()

    def evict(self, pinned: Callable[[str], bool]) -> int:
        """Drop the least recently used profiles over ``capacity``, except ``pinned`` ones (touched
        and not yet written: only the cache has them)."""
        cache = self._cache
        over = len(cache) - self.capacity
        if over <= 0:
            return 0
        dropped = 0
        for _ in range(len(cache)):
            if dropped >= over:
                break
            person, profile = cache.popitem(last=False)
            if pinned(person):
                cache[person] = profile  # to the back: looked at again only after every other
                continue
            dropped += 1
        self.evictions += dropped
        return dropped

    def drop(self, partitions: set[int]) -> None:
        """Stop owning ``partitions``: their cached profiles go (their entries stay on disk)."""
        self.owned -= partitions
        for person in [p for p in self._cache if self._partition_of(p) in partitions]:
            del self._cache[person]

    def estimate(self) -> int:
        """RocksDB's estimate of the entries on disk (profiles, pointers, timers)."""
        return self._db.property_int_value("rocksdb.estimate-num-keys") or 0
