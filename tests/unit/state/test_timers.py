"""Keyed timers hand out every due entry in deadline order and forget revoked persons."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.state.timers import Timers


@given(st.lists(st.tuples(st.integers(0, 100), st.sampled_from("abcde"))), st.integers(0, 100))
def test_due_entries_come_out_in_deadline_order_and_the_rest_stay(
    entries: list[tuple[int, str]], now: int
) -> None:
    timers = Timers()
    for due, person in entries:
        timers.schedule(due, person)
    taken = list(timers.due(now))
    assert taken == sorted(e for e in entries if e[0] <= now)
    assert len(timers) == sum(1 for due, _ in entries if due > now)


def test_keep_forgets_the_persons_of_revoked_partitions() -> None:
    timers = Timers()
    timers.schedule(5, "a")
    timers.schedule(3, "b")
    timers.keep(lambda person: person == "a")
    assert list(timers.due(10)) == [(5, "a")]
