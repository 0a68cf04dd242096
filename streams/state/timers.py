"""Keyed timers: the next deadline of each person, earliest first.

A person's deadline moves as events arrive, and old entries are not removed: :meth:`Timers.due` hands
out every entry whose time has come, and the caller skips those that no longer match the person's
current deadline (a stale entry). So scheduling is a heap push and never a search.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator


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
