"""Keyed timers: the next deadline of each person, earliest first; in memory or in the state store.

A person's deadline moves as events arrive, and old entries are not removed: :meth:`Timers.due` hands
out every entry whose time has come, and the caller skips those that no longer match the person's
current deadline (a stale entry). So scheduling is a heap push and never a search.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Callable, Iterator

from streams.state.rocks import Rdict, WriteBatch

_TIMER, _FLOOR = b"t", b"f"
_DUE = struct.Struct(">q")
_PART = struct.Struct(">H")


class Timers:
    """(deadline ms, person) entries, earliest first."""

    __slots__ = ("_heap",)

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, due: int, person: str) -> None:
        heapq.heappush(self._heap, (due, person))

    def due(self, now: int) -> Iterator[tuple[int, str]]:
        """Take out every entry due at ``now`` (entries scheduled meanwhile are seen too)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Forget the entries of persons that are not ``wanted`` (revoked partitions)."""
        self._heap = [(due, person) for due, person in self._heap if wanted(person)]
        heapq.heapify(self._heap)


class DiskTimers:
    """The same entries in the state store, per partition and ordered by deadline
    (``t partition due person`` -> due), so a deadline is kept for a profile that is not in memory,
    and survives a restart on the same disk.

    Each partition has its own floor. Only the partitions the worker owns (``owned``) are handed out:
    those of another partition stay, with its floor, until the partition comes back (its owner
    meanwhile fired what fell due and saved it to the changelog, or was killed first, and then the
    entries fire here). Entries due are handed out from the floor on, and the floor moves past them
    in memory at once; on disk it moves (and the entries below it go) only once the checkpoint holding
    what firing them changed is acknowledged (:meth:`settle`), so a crash fires them again rather
    than never. An entry scheduled below its partition's floor is stored at it: it fires on the next
    turn.
    """

    __slots__ = ("_db", "_floors", "_new", "_owned", "_partition_of")

    def __init__(self, db: Rdict, partition_of: Callable[[str], int], owned: set[int]) -> None:
        self._db = db
        self._partition_of = partition_of
        self._owned = owned  # shared with the profile table: the partitions assigned now
        self._floors: dict[int, int] = {}
        self._new: dict[bytes, bytes] = {}

    def floor(self, partition: int) -> int:
        floor = self._floors.get(partition)
        if floor is None:
            raw = self._db.get(_FLOOR + _PART.pack(partition))
            floor = self._floors[partition] = _DUE.unpack(raw)[0] if raw is not None else 0
        return floor

    def floors(self) -> dict[int, int]:
        """The floor of every owned partition (what a checkpoint closed now has fired)."""
        return {partition: self.floor(partition) for partition in self._owned}

    def __len__(self) -> int:
        return len(self._new)  # entries not yet in the store (the store's count is not kept)

    def schedule(self, due: int, person: str) -> None:
        partition = self._partition_of(person)
        at = max(due, self.floor(partition))
        self._new[_TIMER + _PART.pack(partition) + _DUE.pack(at) + person.encode()] = _DUE.pack(due)

    def due(self, now: int) -> Iterator[tuple[int, str]]:
        """Every entry of the owned partitions due at ``now``, earliest first (entries scheduled
        meanwhile are seen on the next call)."""
        self._write_new()
        runs = [self._due_in(partition, now) for partition in sorted(self._owned)]
        yield from heapq.merge(*runs)

    def _due_in(self, partition: int, now: int) -> Iterator[tuple[int, str]]:
        floor = self.floor(partition)
        if now < floor:
            return
        head = _TIMER + _PART.pack(partition)
        end = head + _DUE.pack(now + 1)
        it = self._db.iter()
        it.seek(head + _DUE.pack(floor))
        self._floors[partition] = now + 1
        while it.valid():
            raw = bytes(it.key())
            if raw >= end:
                break
            yield _DUE.unpack(bytes(it.value()))[0], raw[11:].decode()
            it.next()

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Entries of partitions not owned stay for when they come back (``due`` skips them)."""

    def settle(self, floors: dict[int, int], batch: WriteBatch) -> None:
        """Entries below each partition's floor have fired and what they changed is acknowledged:
        forget them."""
        for partition, floor in floors.items():
            head = _TIMER + _PART.pack(partition)
            batch.delete_range(head, head + _DUE.pack(floor))
            batch.put(_FLOOR + _PART.pack(partition), _DUE.pack(floor))

    def forget(self, partition: int) -> None:
        """Drop every entry of ``partition`` and its floor (it is read in full next, which schedules
        its deadlines again)."""
        self._write_new()
        head = _TIMER + _PART.pack(partition)
        self._db.delete_range(head, _TIMER + _PART.pack(partition + 1))
        self._db.delete(_FLOOR + _PART.pack(partition))
        self._floors[partition] = 0

    def _write_new(self) -> None:
        if not self._new:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in self._new.items():
            batch.put(key, value)
        self._db.write(batch)
        self._new = {}
