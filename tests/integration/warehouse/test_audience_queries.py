"""streams/warehouse/audiences.py on ClickHouse 18.16: frontier, sizes, snapshot pages over hash ranges,
netted deltas and their cursors, over rows inserted as the sink inserts them (a replayed one included).
A property: snapshot(c) + the netted deltas from c up to c2 is the audience at c2, whatever is written
while the snapshot is paged."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from clickhouse_driver import Client
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.dev.stack import apply_migrations, clickhouse_client
from streams.domain.audiences.deltas import Delta, fold
from streams.domain.audiences.destinations import Destination
from streams.domain.audiences.hashing import AudienceIdKind
from streams.settings import Settings
from streams.sinks.audience_tables import AudienceBatch
from streams.warehouse.audience_cursors import CursorError, CursorExpired, PageToken, encode_page_token
from streams.warehouse.audiences import (
    AudienceSize,
    Member,
    audience_size,
    deltas,
    frontier,
    listing,
    oldest_cursor,
    record_pull,
    sizes,
    snapshot,
    snapshot_page,
)
from tests.conftest import TestStack as Stack

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000
EMAIL, PHONE = AudienceIdKind.EMAIL, AudienceIdKind.PHONE


def h(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def insert(client: Client, log: Sequence[tuple[int, Delta]]) -> None:
    """Rows as the sink writes them: ``audience_members`` first, then ``audience_deltas``."""
    batch = AudienceBatch()
    for offset, delta in log:
        batch.add_delta(delta, T0 + offset, offset)
    for table, columns in batch.tables():
        client.execute(
            f"INSERT INTO {table} ({', '.join(columns.names)}) VALUES", columns.columns, columnar=True
        )


def members(keys: set[tuple[AudienceIdKind, str]]) -> set[Member]:
    return {Member(str(kind), value) for kind, value in keys}


def whole(client: Client, destination: str, audience: str, **kwargs: Any) -> list[Member]:
    return [m for page in snapshot(client, destination, audience, **kwargs) for m in page.members]


@pytest.fixture
def client(settings_factory: Callable[..., Settings]) -> Iterator[Client]:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield client
    finally:
        client.disconnect()


def d(audience: str, kind: AudienceIdKind, value: str, added: bool, destination: str = "google") -> Delta:
    return Delta(destination, audience, kind, h(value), added)


def test_frontier_sizes_snapshots_and_deltas_of_a_small_log(client: Client) -> None:
    assert frontier(client) == 0 and oldest_cursor(client) == 0
    assert sizes(client, "google", 0) == {} and whole(client, "google", "vip") == []
    log = [
        (0, d("vip", EMAIL, "ann", True)),
        (1, d("vip", PHONE, "ann", True)),  # the same hash under another kind is another member
        (2, d("vip", EMAIL, "bob", True)),
        (3, d("bought/product:P1", EMAIL, "ann", True)),
        (5, d("vip", EMAIL, "ann", False)),  # 4: a record refused by the sink, in no table
        (6, d("vip", EMAIL, "cid", True, destination="meta")),
        (7, d("vip", EMAIL, "bob", False)),
        (8, d("vip", EMAIL, "bob", True)),
        (9, d("vip", EMAIL, "dan", True)),
    ]
    insert(client, log)
    insert(client, [log[6]])  # replayed after a crash: same offset, same values
    assert frontier(client) == 10
    assert sizes(client, "google", 10) == {"bought/product:P1": 1, "vip": 3}
    assert sizes(client, "google", 5) == {"bought/product:P1": 1, "vip": 3}
    assert sizes(client, "google", 6) == {"bought/product:P1": 1, "vip": 2}
    assert audience_size(client, "meta", "vip", 10) == 1 and audience_size(client, "meta", "nope", 10) == 0

    now = whole(client, "google", "vip")
    assert sorted(now) == sorted(
        [Member("phone", h("ann")), Member("email", h("bob")), Member("email", h("dan"))]
    )
    assert set(whole(client, "google", "vip", cursor=6)) == {
        Member("phone", h("ann")),
        Member("email", h("bob")),
    }
    assert whole(client, "google", "vip", cursor=0) == []

    page = deltas(client, "google", "vip", 3, limit=1000)
    assert page.adds == [Member("email", h("dan"))]  # bob: removed and added again, nets to nothing
    assert page.removes == [Member("email", h("ann"))]
    assert (page.next_cursor, page.more) == (10, False)
    # Limited: rows 5 and 7 (the replay of 7 read once), then the rest.
    first = deltas(client, "google", "vip", 3, limit=3)
    assert (first.next_cursor, first.more) == (8, True)
    assert first.removes == [Member("email", h("ann")), Member("email", h("bob"))] and first.adds == []
    second = deltas(client, "google", "vip", first.next_cursor, limit=3)
    assert second.adds == [Member("email", h("bob")), Member("email", h("dan"))]
    assert (second.next_cursor, second.more) == (10, False)
    assert deltas(client, "google", "vip", 10) == ([], [], 10, False)


def test_snapshot_pages_cover_every_member_exactly_once_whatever_the_ranges(client: Client) -> None:
    log: list[tuple[int, Delta]] = []
    for n in range(600):
        log.append((len(log), d("big", EMAIL if n % 3 else PHONE, f"person-{n}", True)))
    for n in range(0, 600, 7):  # some leave again
        log.append((len(log), d("big", EMAIL if n % 3 else PHONE, f"person-{n}", False)))
    insert(client, log)
    expected = members(fold(set(), [delta for _, delta in log]))
    assert audience_size(client, "google", "big", frontier(client)) == len(expected) == 514
    for page_size, ranges in ((1000, 1), (514, 1), (100, 6), (40, 13), (3, 172)):
        pages = list(snapshot(client, "google", "big", page_size=page_size))
        assert {(p.ranges, p.page) for p in pages} == {(ranges, k) for k in range(ranges)}
        found = [m for p in pages for m in p.members]
        assert len(found) == len(set(found)) and set(found) == expected, page_size
        assert [p.done for p in pages] == [False] * (ranges - 1) + [True]
        assert all(p.cursor == len(log) for p in pages)
        if ranges > 1:  # each page holds the hashes of its own share of the 8-digit prefixes
            assert all(
                p.page * 16**8 // ranges <= int(m.hash[:8], 16) < (p.page + 1) * 16**8 // ranges
                for p in pages
                for m in p.members
            )
        if page_size >= 40:  # uniform hashes: no range far above the page size
            assert max(len(p.members) for p in pages) <= 2 * page_size


def test_cursors_and_tokens_are_checked(client: Client) -> None:
    insert(client, [(0, d("vip", EMAIL, "ann", True)), (1, d("vip", EMAIL, "bob", True))])
    with pytest.raises(CursorError, match="ahead of the newest delta"):
        deltas(client, "google", "vip", 3)
    with pytest.raises(CursorError, match="ahead of the newest delta"):
        snapshot_page(client, "google", "vip", cursor=3)
    # A page token is checked against the frontier on its first page only; one made up with a cursor
    # ahead reads what there is, and its cursor is refused where the deltas go on.
    forged = encode_page_token(PageToken(5, 2, 1), "google", "vip")
    last = snapshot_page(client, "google", "vip", forged)
    assert last.done and last.cursor == 5
    with pytest.raises(CursorError, match="ahead of the newest delta"):
        deltas(client, "google", "vip", last.cursor)
    first = snapshot_page(client, "google", "vip", page_size=1)
    assert first.next_page_token is not None and first.ranges == 2
    with pytest.raises(CursorError, match="another audience"):
        snapshot_page(client, "google", "lapsed", first.next_page_token)
    with pytest.raises(CursorError, match="not a page token"):
        snapshot_page(client, "google", "vip", first.next_page_token + "x")
    with pytest.raises(ValueError, match="page_size"):
        snapshot_page(client, "google", "vip", page_size=0)
    with pytest.raises(ValueError, match="limit"):
        deltas(client, "google", "vip", 0, limit=10_001)

    # Retention dropped the deltas below offset 1: older cursors are expired, snapshots there too.
    client.execute("INSERT INTO audience_retention (retained_from, reason) VALUES", [(1, "test")])
    assert oldest_cursor(client) == 1
    with pytest.raises(CursorExpired, match="take a new snapshot"):
        deltas(client, "google", "vip", 0)
    with pytest.raises(CursorExpired):
        snapshot_page(client, "google", "vip", cursor=0)
    old = encode_page_token(PageToken(0, 16, 3), "google", "vip")
    with pytest.raises(CursorExpired):
        snapshot_page(client, "google", "vip", old)
    assert deltas(client, "google", "vip", 1).adds == [Member("email", h("bob"))]


def test_listing_and_pulls(client: Client) -> None:
    insert(
        client,
        [
            (0, d("vip", EMAIL, "ann", True)),
            (1, d("bought/product:P1", EMAIL, "ann", True)),
            (2, d("dropped", EMAIL, "ann", True)),  # no longer configured
            (3, d("bought/product:P1", EMAIL, "ann", False)),
        ],
    )
    destination = Destination.model_validate(
        {
            "id": "google",
            "kind": "google_customer_match",
            "api_key_sha256": h("key"),
            "audiences": [
                {"segment": "vip"},
                {"segment": "lapsed"},
                {"segment": "bought", "subjects": "product:*"},
                {"segment": "cat", "subjects": "category:shoes"},
            ],
        }
    )
    assert listing(client, destination, frontier(client)) == [
        AudienceSize("bought/product:P1", 0),
        AudienceSize("cat/category:shoes", 0),
        AudienceSize("lapsed", 0),
        AudienceSize("vip", 1),
    ]
    record_pull(client, "google", "vip", "deltas", 3, 0, 4, "127.0.0.1")
    assert client.execute(
        "SELECT destination_id, audience_id, operation, rows, cursor_from, cursor_to, client "
        "FROM audience_pulls"
    ) == [("google", "vip", "deltas", 3, 0, 4, "127.0.0.1")]
    skew = client.execute(
        "SELECT abs(toInt64(toUnixTimestamp(at)) - toUnixTimestamp(ingested_at)) FROM audience_pulls"
    )
    assert skew[0][0] <= 5  # at is UTC, like the server's clock
    with pytest.raises(ValueError, match="operation"):
        record_pull(client, "google", "vip", "peek", 0, 0, 0, "x")


# -- the property ------------------------------------------------------------------------------------

KEYS = [(kind, h(f"k{n}")) for n in range(14) for kind in ((EMAIL, PHONE) if n % 4 == 0 else (EMAIL,))]


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], int, int, int, int]:
    """Changes as (offset gap, target, key index): target 0 is the audience under test, 1 another
    audience of its destination, 2 the same audience id of another destination; and the cut points."""
    changes = draw(
        st.lists(
            st.tuples(st.integers(1, 3), st.sampled_from([0, 0, 0, 1, 2]), st.integers(0, len(KEYS) - 1)),
            max_size=60,
        )
    )
    c2_index = draw(st.integers(0, len(changes)))
    c_back = draw(st.integers(0, 2 * c2_index + 1))
    page_size = draw(st.integers(1, 4))
    limit = draw(st.integers(1, 7))
    return changes, c2_index, c_back, page_size, limit


@pytest.fixture(scope="module")
def shared(stack: Stack) -> Iterator[Client]:
    """One database for every example; each example takes fresh ids and offsets past the frontier."""
    settings = stack.settings(clickhouse_database=f"test_{uuid.uuid4().hex[:10]}")
    apply_migrations(settings, report=lambda _msg: None)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield client
    finally:
        client.disconnect()


@hypothesis_settings(max_examples=25, deadline=None)
@given(logs())
def test_snapshot_at_c_plus_deltas_to_c2_is_the_audience_at_c2(
    shared: Client, drawn: tuple[list[tuple[int, int, int]], int, int, int, int]
) -> None:
    changes, c2_index, c_back, page_size, limit = drawn
    client = shared
    run = uuid.uuid4().hex[:8]
    destination, other = f"d{run}", f"o{run}"
    targets = [(destination, "seg"), (destination, "seg/product:P1"), (other, "seg")]
    state: dict[tuple[int, int], bool] = {}
    log: list[tuple[int, Delta]] = []
    offset = frontier(client)
    base = offset
    for gap, target, key in changes:
        offset += gap
        added = not state.get((target, key), False)  # each key alternates, starting with an add
        state[(target, key)] = added
        kind, value = KEYS[key]
        log.append((offset, Delta(*targets[target], kind, value, added)))
    own = [(o, delta) for o, delta in log if (delta.destination_id, delta.audience_id) == targets[0]]

    def audience_at(cursor: int) -> set[Member]:
        return members(fold(set(), [delta for o, delta in own if o < cursor]))

    insert(client, log[:c2_index])
    c2 = frontier(client)
    c = max(base, c2 - c_back)
    assert sizes(client, destination, c).get("seg", 0) == len(audience_at(c))

    first = snapshot_page(client, destination, "seg", page_size=page_size, cursor=c)
    changed: list[tuple[list[Member], list[Member]]] = []
    cursor = c
    while True:  # the deltas after c, read before the rest of the log arrives
        page = deltas(client, destination, "seg", cursor, limit)
        changed.append((page.adds, page.removes))
        assert page.next_cursor > cursor or not page.more
        cursor = page.next_cursor
        if not page.more:
            break
    assert cursor == c2
    insert(client, log[c2_index:])  # written while the snapshot is paged: offsets >= c2 >= c

    found = list(first.members)
    token = first.next_page_token
    while token is not None:
        page_n = snapshot_page(client, destination, "seg", token)
        found.extend(page_n.members)
        token = page_n.next_page_token
    assert len(found) == len(set(found))
    audience = set(found)
    assert audience == audience_at(c)
    for adds, removes in changed:
        assert not set(adds) & set(removes)
        audience = (audience - set(removes)) | set(adds)
    assert audience == audience_at(c2)

    while True:  # and on to the end
        page = deltas(client, destination, "seg", cursor, limit)
        audience = (audience - set(page.removes)) | set(page.adds)
        cursor = page.next_cursor
        if not page.more:
            break
    assert cursor == frontier(client)
    assert audience == audience_at(cursor)
