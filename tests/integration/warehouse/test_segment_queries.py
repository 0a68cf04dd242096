"""streams/warehouse/segments.py on ClickHouse 18.16: members with contacts and pages, members at a
moment, sizes, and a person's segments across a merge, over a history with a replayed duplicate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_driver import Client

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.warehouse.segments import (
    CursorError,
    SegmentSize,
    person_segments,
    segment_members,
    segment_sizes,
)

pytestmark = pytest.mark.integration

D0 = 1_767_225_600  # 2026-01-01T00:00:00Z
H = 3600
DAY = 24 * H

# person, segment, subject, seq, at (seconds since D0), trigger
_CHANGES = [
    ("p1", "vip", "", 1, 10 * H, "event"),
    ("p1", "vip", "", 2, DAY + 12 * H, "timer"),
    ("p1", "vip", "", 3, 2 * DAY + 8 * H, "event"),
    ("p1", "vip", "", 3, 2 * DAY + 8 * H, "event"),  # published again after a crash
    ("p2", "vip", "", 1, 11 * H, "event"),
    ("p5", "vip", "", 1, H, "event"),
    ("p5", "vip", "", 2, DAY, "merge"),  # p5 merged into p2
    ("p2", "bought", "product:A", 1, DAY + H, "event"),
    ("p2", "bought", "product:B", 1, DAY + 2 * H, "event"),
    ("p1", "bought", "product:A", 1, DAY + H, "event"),
    ("p1", "bought", "product:A", 2, DAY + 5 * H, "event"),  # returned it
]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(D0 + seconds, UTC)


@pytest.fixture
def client(settings_factory: Callable[..., Settings]) -> Iterator[Client]:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    rows: list[tuple[Any, ...]] = [
        (f"{person}-{sid}-{subject}-{seq}", person, sid, subject, "entered" if seq % 2 else "exited", seq,
         _at(at), (D0 + at) * 1000, trigger, f"why {seq}", 2, f"{person}@example.com", f"+4670{person[-1]}")
        for person, sid, subject, seq, at, trigger in _CHANGES
    ]  # fmt: skip
    client.execute(
        "INSERT INTO segment_changes (change_id, person_id, segment_id, subject, change, seq, at, at_ms, "
        "trigger, reason, definition_version, email, phone) VALUES",
        rows,
    )
    client.execute(
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) VALUES",
        [("p5", "p2", "merge-1", (D0 + DAY) * 1000)],
    )
    try:
        yield client
    finally:
        client.disconnect()


def test_members_come_with_contacts_and_the_time_they_entered(client: Client) -> None:
    page = segment_members(client, "vip")
    assert [(m.person_id, m.seq, m.since) for m in page.members] == [
        ("p1", 3, _at(2 * DAY + 8 * H)),
        ("p2", 1, _at(11 * H)),
    ]
    assert page.members[0].contacts.email == "p1@example.com"
    assert page.members[0].contacts.phone == "+46701"
    assert page.members[0].definition_version == 2
    assert page.next_cursor is None
    assert page.members[1].to_dict()["contacts"]["email"] == "p2@example.com"


def test_pages_follow_the_cursor_to_the_end(client: Client) -> None:
    first = segment_members(client, "bought", limit=1)
    assert [(m.subject, m.person_id) for m in first.members] == [("product:A", "p2")]
    assert first.next_cursor is not None
    second = segment_members(client, "bought", limit=1, cursor=first.next_cursor)
    assert [(m.subject, m.person_id) for m in second.members] == [("product:B", "p2")]
    assert second.next_cursor is not None
    last = segment_members(client, "bought", limit=1, cursor=second.next_cursor)
    assert last.members == () and last.next_cursor is None
    with pytest.raises(CursorError, match="belongs to segment 'bought'"):
        segment_members(client, "vip", cursor=first.next_cursor)


def test_members_of_one_subject_and_at_a_past_moment(client: Client) -> None:
    product_a = segment_members(client, "bought", subject="product:A")
    assert [m.person_id for m in product_a.members] == ["p2"]  # p1 returned it
    assert [m.person_id for m in segment_members(client, "vip", subject="").members] == ["p1", "p2"]
    morning = segment_members(client, "vip", at=_at(10 * H + 1800))
    assert [m.person_id for m in morning.members] == ["p1", "p5"]
    next_day = segment_members(client, "vip", at=_at(DAY + 13 * H))
    assert [m.person_id for m in next_day.members] == ["p2"]  # p1 left at noon, p5 at the merge
    bought_then = segment_members(client, "bought", at=_at(DAY + 3 * H))
    assert [(m.subject, m.person_id) for m in bought_then.members] == [
        ("product:A", "p1"),
        ("product:A", "p2"),
        ("product:B", "p2"),
    ]


def test_sizes_count_memberships_and_persons(client: Client) -> None:
    assert segment_sizes(client) == [SegmentSize("bought", None, 2, 1), SegmentSize("vip", None, 2, 2)]
    assert segment_sizes(client, ["bought"], by_subject=True) == [
        SegmentSize("bought", "product:A", 1, 1),
        SegmentSize("bought", "product:B", 1, 1),
    ]
    assert segment_sizes(client, ["vip"], at=_at(10 * H + 1800)) == [SegmentSize("vip", None, 2, 2)]
    assert segment_sizes(client, ["nothing"]) == []
    assert segment_sizes(client, []) == []


def test_person_segments_span_the_ids_merged_into_the_person(client: Client) -> None:
    view = person_segments(client, "p5")  # a merged id finds its survivor
    assert view.person_id == "p2" and view.person_ids == ("p2", "p5")
    assert [(m.segment_id, m.subject) for m in view.current] == [
        ("bought", "product:A"),
        ("bought", "product:B"),
        ("vip", ""),
    ]
    assert [(c.person_id, c.segment_id, c.change, c.seq, c.trigger) for c in view.history] == [
        ("p5", "vip", "entered", 1, "event"),
        ("p2", "vip", "entered", 1, "event"),
        ("p5", "vip", "exited", 2, "merge"),
        ("p2", "bought", "entered", 1, "event"),
        ("p2", "bought", "entered", 1, "event"),
    ]
    replayed = person_segments(client, "p1")
    assert [c.seq for c in replayed.history if c.segment_id == "vip"] == [1, 2, 3]  # the copy collapsed
    assert person_segments(client, "p2", history=1).history[0].subject == "product:B"
