"""Deltas pages read from ClickHouse's rows and then from the API's tail of ``audiences.deltas``, against a
from-scratch computation, over random logs of changes: a client that takes the members at any cursor and
then applies every page until it is caught up holds exactly the audience at the end, whatever the split
between ClickHouse and the tail, the sink's progress while it pages (the tail drops what ClickHouse has),
records arriving meanwhile, replayed rows and the page limit.

ClickHouse's side is the rows the deltas query returns (offsets in ``[cursor, frontier)`` in order, at
most the limit); the query itself runs against real ClickHouse in the integration tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.api.delta_tail import DeltaTail, TailRow
from streams.settings import Settings
from streams.warehouse.audience_cursors import CursorError
from streams.warehouse.audiences import DeltaRow, combine_deltas

DESTINATION, AUDIENCE, OTHER = "google", "vip", "lapsed"
HASHES = [f"{n:064x}" for n in range(6)]


@dataclass(frozen=True)
class Record:
    offset: int
    audience: str
    kind: str
    hash: str
    added: bool


@st.composite
def logs(draw: st.DrawFn) -> list[Record]:
    """A topic's records: per (audience, kind, hash) adds and removes alternate, starting with an add;
    offsets grow with gaps (transaction markers, records of no audience)."""
    members: dict[tuple[str, str, str], bool] = {}
    records: list[Record] = []
    offset = 0
    for _ in range(draw(st.integers(0, 60))):
        offset += draw(st.integers(1, 3))
        key = (draw(st.sampled_from([AUDIENCE, OTHER])), draw(st.sampled_from(["email", "phone"])),
               draw(st.sampled_from(HASHES)))  # fmt: skip
        added = not members.get(key, False)
        members[key] = added
        records.append(Record(offset, key[0], key[1], key[2], added))
    return records


def members_at(records: list[Record], cursor: int) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for record in records:
        if record.offset < cursor and record.audience == AUDIENCE:
            if record.added:
                found.add((record.kind, record.hash))
            else:
                found.discard((record.kind, record.hash))
    return found


def stored_rows(
    records: list[Record], cursor: int, stored: int, limit: int, replays: set[int]
) -> list[DeltaRow]:
    rows: list[DeltaRow] = []
    for record in records:
        if cursor <= record.offset < stored and record.audience == AUDIENCE:
            row = (record.offset, record.kind, record.hash, int(record.added))
            rows.extend([row, row] if record.offset in replays else [row])  # a replay repeats its row
    return rows[:limit]


def new_tail() -> DeltaTail:
    return DeltaTail(Settings(), lambda: 0)  # never started: fed by hold(), as its reader would


def hold(tail: DeltaTail, records: list[Record], end: int) -> None:
    start = tail.end
    tail.hold(
        [TailRow(r.offset, DESTINATION, r.audience, r.kind, r.hash, r.added) for r in records
         if start <= r.offset < end],
        end,
    )  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    records=logs(),
    data=st.data(),
    limit=st.integers(1, 8),
)
def test_members_at_a_cursor_plus_every_page_after_it_are_the_audience_at_the_end(
    records: list[Record], data: st.DataObject, limit: int
) -> None:
    last = records[-1].offset + 1 if records else 0
    end = last + data.draw(st.integers(0, 2))  # the reader stands after a commit marker
    stored = data.draw(st.integers(0, end), label="ClickHouse's frontier")
    low = data.draw(st.integers(0, stored), label="where the tail starts")
    arrived = data.draw(st.integers(stored, end), label="what the tail has read so far")
    replays = (
        set(data.draw(st.lists(st.sampled_from([r.offset for r in records]), max_size=5)))
        if records
        else set()
    )
    tail = new_tail()
    tail.begin(low)
    hold(tail, records, arrived)
    cursor = data.draw(st.integers(0, arrived), label="the client's cursor")
    members = members_at(records, cursor)

    for _ in range(10 * len(records) + 10):
        # Between pages the sink may write more, and the tail may read more.
        stored = data.draw(st.integers(stored, min(arrived, end)))
        if arrived < end and (cursor >= arrived or data.draw(st.booleans())):  # caught up: it reads on
            following = data.draw(st.integers(arrived + 1, end))
            hold(tail, records, following)
            arrived = following
        frontier, at = stored, cursor

        def rows(frontier: int = frontier, at: int = at) -> list[DeltaRow]:
            return stored_rows(records, at, frontier, limit, replays)

        page = combine_deltas(DESTINATION, AUDIENCE, cursor, limit, stored, rows, tail)
        assert page.next_cursor >= cursor
        for member in page.removes:
            members.discard((member.kind, member.hash))
        for member in page.adds:
            members.add((member.kind, member.hash))
        cursor = page.next_cursor
        if cursor == end and not page.more:
            break
    else:
        pytest.fail("the pages never reached the end")
    assert cursor == end
    assert members == members_at(records, end)


def test_a_tail_that_does_not_reach_back_to_clickhouse_is_not_used() -> None:
    """Records between ClickHouse's frontier and where the tail started would be missing: ClickHouse
    alone answers, up to its frontier."""
    tail = new_tail()
    tail.begin(10)
    tail.hold([TailRow(12, DESTINATION, AUDIENCE, "email", HASHES[0], True)], 13)
    page = combine_deltas(DESTINATION, AUDIENCE, 5, 100, 8, lambda: [], tail)
    assert (page.adds, page.next_cursor) == ([], 8)
    with pytest.raises(CursorError, match="ahead of the newest delta"):
        combine_deltas(DESTINATION, AUDIENCE, 11, 100, 8, lambda: [], tail)


def test_the_tail_forgets_what_clickhouse_has() -> None:
    tail = new_tail()
    tail.begin(0)
    tail.hold([TailRow(n, DESTINATION, AUDIENCE, "email", HASHES[n], True) for n in range(4)], 4)
    assert tail.read(3, DESTINATION, AUDIENCE, 0, 10) == ([(3, "email", HASHES[3], 1)], 4)
    assert tail.read(2, DESTINATION, AUDIENCE, 0, 10) is None  # ClickHouse cannot go back
    assert tail.read(4, DESTINATION, AUDIENCE, 0, 10) == ([], 4)
