"""Audience queries on ClickHouse (migration 0009): the frontier, sizes, snapshot pages, deltas, pulls.

Cursor c means "every delta at an offset < c is included" (:mod:`streams.warehouse.audience_cursors`).
Per (destination, audience, kind, hash) the deltas alternate added / removed starting with added
(:mod:`streams.domain.audiences.deltas`), so:

- a member at c is a (kind, hash) whose newest row at an offset < c is an add: ``argMax(added,
  kafka_offset)``, exact without FINAL because a replayed row repeats its offset and values;
- an audience's size at c is the sum of +1 per add and -1 per remove below c (1 for each member, 0 for
  each key that left), read with FINAL so replays count once, in memory that grows with the number of
  audiences only.

A snapshot is taken at one cursor and split into equal hash-prefix ranges (hashes are uniform SHA-256
hex); each page reads one range of ``audience_members``, a primary-key range read, so memory and time
per page do not grow with the audience, and rows written meanwhile (offsets >= c) do not change it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from clickhouse_driver import Client

from streams.domain.audiences.deltas import Delta, net
from streams.domain.audiences.destinations import Destination, audience_id, parse_audience_id
from streams.domain.audiences.hashing import AudienceIdKind
from streams.warehouse.audience_cursors import (
    CursorError,
    CursorExpired,
    PageToken,
    decode_page_token,
    encode_page_token,
    hash_range,
    ranges_for,
)

MAX_PAGE_SIZE = 10_000
MAX_DELTAS = 10_000
# How long a deltas request waits for the tail to reach a cursor ahead of ClickHouse (one another API
# process gave out, whose tail was a little ahead of this one's).
TAIL_WAIT_S = 2.0
OPERATIONS = ("snapshot", "deltas", "export", "list")


class Member(NamedTuple):
    kind: str
    hash: str


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    members: tuple[Member, ...]
    cursor: int  # the snapshot's cursor: deltas continue from it
    next_page_token: str | None  # None on the last page
    ranges: int
    page: int

    @property
    def done(self) -> bool:
        return self.next_page_token is None


class DeltasPage(NamedTuple):
    adds: list[Member]  # netted: keys changed an odd number of times whose newest change is an add
    removes: list[Member]
    next_cursor: int  # the last offset read + 1, or the end of what was read (the frontier)
    more: bool  # the limit was reached: more deltas may follow at once


DeltaRow = tuple[int, str, str, int]  # kafka_offset, kind, hash, added


class NewerDeltas(Protocol):
    """The deltas ClickHouse does not have yet (:class:`streams.api.delta_tail.DeltaTail`)."""

    @property
    def end(self) -> int: ...

    def wait_for(self, offset: int, timeout_s: float) -> bool: ...

    def read(
        self, frontier: int, destination_id: str, audience: str, start: int, limit: int
    ) -> tuple[list[DeltaRow], int] | None: ...


@dataclass(frozen=True, slots=True)
class AudienceSize:
    audience_id: str
    members: int


def frontier(client: Client) -> int:
    """The cursor up to which every delta is visible: the largest offset in ``audience_deltas`` + 1,
    0 when it is empty, as the audiences sink recorded it (``audience_frontier``, migration 0015).

    The sink writes a one-partition topic one batch at a time in offset order, each batch into
    ``audience_members``, then ``audience_deltas``, then its frontier, and retries a batch until it is
    in. So every offset below the frontier that has rows has them in both tables. Offsets with no row
    (a refused record, another audience) are in no table. Reading the sink's record costs one small
    read whatever the size of the tables, and an erasure that deletes the newest rows leaves it alone.
    """
    return int(client.execute("SELECT max(frontier) FROM audience_frontier")[0][0])


def frontier_reader(make_client: Callable[[], Client]) -> Callable[[], int]:
    """:func:`frontier` on a client of its own each time (for another thread)."""

    def read() -> int:
        client = make_client()
        try:
            return frontier(client)
        finally:
            client.disconnect()

    return read


def oldest_cursor(client: Client) -> int:
    """The oldest cursor still answered exactly: deltas below it may have been dropped by retention."""
    return int(client.execute("SELECT max(retained_from) FROM audience_retention")[0][0])


def check_cursor(client: Client, cursor: int) -> int:
    """The frontier, after checking ``cursor`` is not ahead of it (:class:`CursorError`) nor older than
    the retained deltas (:class:`CursorExpired`)."""
    upper = frontier(client)
    if cursor > upper:
        raise CursorError(
            f"cursor {cursor} is ahead of the newest delta (cursor {upper}); "
            "take a new snapshot when in doubt"
        )
    check_retained(client, cursor)
    return upper


def check_retained(client: Client, cursor: int) -> None:
    """Raise :class:`CursorExpired` when ``cursor`` is older than the retained deltas."""
    oldest = oldest_cursor(client)
    if cursor < oldest:
        raise CursorExpired(
            f"cursor {cursor} is older than the retained deltas (oldest cursor {oldest}); take a new snapshot"
        )


_SIZES = """
SELECT audience_id, sum(if(added = 1, 1, -1)) AS members
FROM audience_deltas FINAL
WHERE destination_id = %(destination)s AND kafka_offset < %(cursor)s {audience}
GROUP BY audience_id
ORDER BY audience_id
"""


def sizes(client: Client, destination_id: str, cursor: int) -> dict[str, int]:
    """Members per audience of the destination at ``cursor``, for every audience with deltas."""
    rows = client.execute(_SIZES.format(audience=""), {"destination": destination_id, "cursor": cursor})
    return {str(audience): int(members) for audience, members in rows}


def audience_size(client: Client, destination_id: str, audience: str, cursor: int) -> int:
    """Members of one audience at ``cursor`` (0 without deltas)."""
    params = {"destination": destination_id, "audience": audience, "cursor": cursor}
    rows = client.execute(_SIZES.format(audience="AND audience_id = %(audience)s"), params)
    return int(rows[0][1]) if rows else 0


def listing(client: Client, destination: Destination, cursor: int) -> list[AudienceSize]:
    """The destination's audiences at ``cursor``: those with deltas that it still reads, and the ones
    its configuration names (a whole segment, a named subject) without any yet, with 0 members."""
    found: dict[str, int] = {}
    for audience, members in sizes(client, destination.id, cursor).items():
        try:
            readable = destination.reads(*parse_audience_id(audience))
        except ValueError:
            readable = False
        if readable:
            found[audience] = members
    for source in destination.audiences:
        if source.subjects is None or not source.subjects.endswith(":*"):
            found.setdefault(audience_id(source.segment, source.subjects), 0)
    return [AudienceSize(audience, found[audience]) for audience in sorted(found)]


_PAGE = """
SELECT kind, hash
FROM audience_members
WHERE destination_id = %(destination)s AND audience_id = %(audience)s {range}
    AND kafka_offset < %(cursor)s
GROUP BY kind, hash
HAVING argMax(added, kafka_offset) = 1
ORDER BY hash, kind
"""


def snapshot_page(
    client: Client,
    destination_id: str,
    audience: str,
    page_token: str | None = None,
    page_size: int = 1000,
    cursor: int | None = None,
) -> SnapshotPage:
    """One page of the audience's members at a fixed cursor.

    Without ``page_token``: the first page of a snapshot at ``cursor`` (default: the frontier), split
    into as many ranges as put about ``page_size`` members in each. With it: the page it names, of the
    same snapshot (``page_size`` and ``cursor`` are then ignored). Raises :class:`CursorError` for a
    token this function did not give out or a cursor ahead of the frontier, :class:`CursorExpired` for
    a cursor older than the retained deltas.
    """
    if page_token is not None:
        # The token's cursor was checked against the frontier when the first page was read (and the
        # token is bound to it); only retention can have moved past it since.
        token = decode_page_token(page_token, destination_id, audience)
        check_retained(client, token.cursor)
    else:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {page_size}")
        if cursor is None:
            cursor = frontier(client)
        else:
            check_cursor(client, cursor)
        size = audience_size(client, destination_id, audience, cursor)
        token = PageToken(cursor, ranges_for(size, page_size), 0)
    lo, hi = hash_range(token.ranges, token.page)
    params: dict[str, Any] = {"destination": destination_id, "audience": audience, "cursor": token.cursor}
    bounds = ""
    if lo is not None:
        bounds += " AND hash >= %(lo)s"
        params["lo"] = lo
    if hi is not None:
        bounds += " AND hash < %(hi)s"
        params["hi"] = hi
    members = tuple(
        Member(str(kind), str(h)) for kind, h in client.execute(_PAGE.format(range=bounds), params)
    )
    following = token.page + 1
    next_token = None
    if following < token.ranges:
        next_token = encode_page_token(
            PageToken(token.cursor, token.ranges, following), destination_id, audience
        )
    return SnapshotPage(members, token.cursor, next_token, token.ranges, token.page)


def snapshot(
    client: Client, destination_id: str, audience: str, page_size: int = 1000, cursor: int | None = None
) -> Iterator[SnapshotPage]:
    """Every page of one snapshot, in order (one page in memory at a time)."""
    page = snapshot_page(client, destination_id, audience, page_size=page_size, cursor=cursor)
    yield page
    while page.next_page_token is not None:
        page = snapshot_page(client, destination_id, audience, page.next_page_token)
        yield page


_DELTAS = """
SELECT kafka_offset, kind, hash, added
FROM audience_deltas
WHERE destination_id = %(destination)s AND audience_id = %(audience)s
    AND kafka_offset >= %(cursor)s AND kafka_offset < %(upper)s
ORDER BY kafka_offset
LIMIT %(limit)s
"""


def deltas(
    client: Client,
    destination_id: str,
    audience: str,
    cursor: int,
    limit: int = 1000,
    tail: NewerDeltas | None = None,
) -> DeltasPage:
    """The audience's changes from ``cursor`` on, at most ``limit`` rows in offset order, netted.

    Each offset is one record, so a page never splits an offset's changes. A replayed row repeats its
    offset: it is read once (and counts toward ``limit``, so a page may hold fewer changes). With a
    ``tail`` (:mod:`streams.api.delta_tail`), the records ClickHouse does not have yet follow those it
    has, so a page runs to the tail's end and a cursor may be ahead of ClickHouse's frontier. Raises
    like :func:`check_cursor`.
    """
    if not 1 <= limit <= MAX_DELTAS:
        raise ValueError(f"limit must be between 1 and {MAX_DELTAS}, got {limit}")
    stored = frontier(client)
    if cursor > stored and (tail is None or not tail.wait_for(cursor, TAIL_WAIT_S)):
        newest = stored if tail is None else max(stored, tail.end)
        raise CursorError(
            f"cursor {cursor} is ahead of the newest delta (cursor {newest}); "
            "take a new snapshot when in doubt"
        )
    check_retained(client, cursor)

    def stored_rows() -> list[DeltaRow]:
        params = {
            "destination": destination_id,
            "audience": audience,
            "cursor": cursor,
            "upper": stored,
            "limit": limit,
        }
        return [(int(o), str(k), str(h), int(a)) for o, k, h, a in client.execute(_DELTAS, params)]

    return combine_deltas(destination_id, audience, cursor, limit, stored, stored_rows, tail)


def combine_deltas(
    destination_id: str,
    audience: str,
    cursor: int,
    limit: int,
    stored: int,
    stored_rows: Callable[[], list[DeltaRow]],
    tail: NewerDeltas | None,
) -> DeltasPage:
    """A deltas page from ClickHouse's rows at offsets in ``[cursor, stored)`` (``stored_rows``, at most
    ``limit``, read only when the cursor is below ``stored``) followed by the tail's from there on."""
    rows = stored_rows() if cursor < stored else []
    upper = stored
    if len(rows) < limit and tail is not None:
        newer = tail.read(stored, destination_id, audience, cursor, limit - len(rows))
        if newer is not None:
            tail_rows, upper = newer
            rows.extend(tail_rows)
    if cursor > upper:  # the tail started again meanwhile, from a newer frontier
        raise CursorError(f"cursor {cursor} is ahead of the newest delta (cursor {upper}); try again")
    return page_of(destination_id, audience, rows, upper, limit)


def page_of(destination_id: str, audience: str, rows: list[DeltaRow], upper: int, limit: int) -> DeltasPage:
    """A deltas page from ``rows`` (offset, kind, hash, added) in offset order, read up to ``upper``
    with ``limit``: netted, continuing after the last row when the limit was reached."""
    changes: list[Delta] = []
    previous = -1
    for offset, kind, h, added in rows:
        if offset != previous:
            changes.append(Delta(destination_id, audience, AudienceIdKind(kind), h, bool(added)))
            previous = offset
    adds, removes = net(changes)
    full = len(rows) >= limit
    next_cursor = rows[-1][0] + 1 if full else upper
    return DeltasPage(
        [Member(str(d.kind), d.hash) for d in adds],
        [Member(str(d.kind), d.hash) for d in removes],
        next_cursor,
        full,
    )


def record_pull(
    client: Client,
    destination_id: str,
    audience: str,
    operation: str,
    rows: int,
    cursor_from: int,
    cursor_to: int,
    requester: str,
) -> None:
    """Record one pull in ``audience_pulls`` (``requester``: the client's address, or who ran the CLI)."""
    if operation not in OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(OPERATIONS)}, got {operation!r}")
    client.execute(
        "INSERT INTO audience_pulls (destination_id, audience_id, operation, rows, cursor_from, cursor_to, "
        "client, at) VALUES",
        [
            (
                destination_id,
                audience,
                operation,
                rows,
                cursor_from,
                cursor_to,
                requester,
                datetime.now(UTC).replace(microsecond=0),
            )
        ],
    )
