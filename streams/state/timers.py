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
    """The same entries in the state store, ordered by deadline (``t due person`` -> due), so a
    deadline is kept for a profile that is not in memory, and survives a restart on the same disk.

    Entries due are handed out from ``floor`` on, and the floor moves past them in memory at once;
    on disk it moves (and the entries below it go) only once the checkpoint holding what firing
    them changed is acknowledged (:meth:`settle`), so a crash fires them again rather than never.
    An entry scheduled below the floor is stored at the floor: it fires on the next turn.
    """

    __slots__ = ("_db", "_floor", "_new")

    def __init__(self, db: Rdict) -> None:
        self._db = db
        raw = db.get(_FLOOR)
        self._floor: int = _DUE.unpack(raw)[0] if raw is not None else 0
        self._new: dict[bytes, bytes] = {}

    @property
    def floor(self) -> int:
        return self._floor

    def __len__(self) -> int:
        return len(self._new)  # entries not yet in the store (the store's count is not kept)

    def schedule(self, due: int, person: str) -> None:
        self._new[_TIMER + _DUE.pack(max(due, self._floor)) + person.encode()] = _DUE.pack(due)

    def due(self, now: int) -> Iterator[tuple[int, str]]:
        """Every entry due at ``now``, earliest first (entries scheduled meanwhile are seen on the
        next call)."""
        self._write_new()
        if now < self._floor:
            return
        end = _TIMER + _DUE.pack(now + 1)
        it = self._db.iter()
        it.seek(_TIMER + _DUE.pack(self._floor))
        self._floor = now + 1
        while it.valid():
            raw = bytes(it.key())
            if raw >= end:
                break
            yield _DUE.unpack(bytes(it.value()))[0], raw[9:].decode()
            it.next()

    def keep(self, wanted: Callable[[str], bool]) -> None:
        """Entries of persons not owned stay (a profile's owner checks ownership when one fires)."""

    def settle(self, floor: int, batch: WriteBatch) -> None:
        """Entries below ``floor`` have fired and what they changed is acknowledged: forget them."""
        batch.delete_range(_TIMER, _TIMER + _DUE.pack(floor))
        batch.put(_FLOOR, _DUE.pack(floor))

    def _write_new(self) -> None:
        if not self._new:
            return
        batch = WriteBatch(raw_mode=True)
        for key, value in self._new.items():
            batch.put(key, value)
        self._db.write(batch)
        self._new = {}
