"""The segment KPIs (deploy/kpi/segments_count.sql, segment_sizes_by_day.sql,
personalised_traffic_share.sql) give known answers on ClickHouse 18.16 and on a current ClickHouse
(chDB), over one small history written straight into the tables of migrations 0003 and 0006."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.warehouse import kpi, migrations

pytestmark = pytest.mark.integration

D0 = 1_767_225_600  # 2026-01-01T00:00:00Z
H = 3600
DAY = 24 * H

# segment_id, version, deleted, kind, personalised
_DEFINITIONS = [
    ("vip", 1, 0, "segment", 1),
    ("vip", 2, 0, "segment", 1),
    ("lapsed", 1, 0, "segment", 0),
    ("bought", 1, 0, "suppression", 1),
    ("old", 1, 0, "segment", 1),
    ("old", 2, 1, "", 1),  # removed: a removal carries no definition body
]

# person, segment, subject, seq, at (seconds since D0)
_CHANGES = [
    ("p1", "vip", "", 1, 10 * H),
    ("p1", "vip", "", 2, DAY + 12 * H),
    ("p1", "vip", "", 3, 2 * DAY + 8 * H),
    ("p1", "vip", "", 3, 2 * DAY + 8 * H),  # published again after a crash: same change
    ("p2", "vip", "", 1, 11 * H),
    ("p3", "lapsed", "", 1, 9 * H),
    ("p3", "lapsed", "", 1, -H),  # a re-evaluated copy with another time, in December's partition
    ("p2", "bought", "product:A", 1, DAY + H),
    ("p2", "bought", "product:B", 1, DAY + 2 * H),
    ("p4", "old", "", 1, 5 * H),
    ("p4", "old", "", 2, DAY + 3 * H),  # the removal made p4 exit
]

# message_id, channel, person, timestamp (seconds since D0)
_EVENTS = [
    ("e1", "web", "p1", 10 * H + 1800),  # p1 in vip
    ("e2", "web", "p1", DAY + 13 * H),  # p1 left vip an hour before
    ("e3", "app", "p3", 10 * H),  # lapsed is not personalised
    ("e4", "web", "p2", 11 * H - 1),  # a second before p2 entered vip
    ("e5", "app", "p2", 11 * H),  # the second p2 entered vip
    ("e5", "app", "p2", 11 * H),  # resolved twice
    ("e6", "store", "p9", 12 * H),  # in no segment
    ("e7", "store", "p2", DAY + 5 * H),  # vip (the suppression audience does not count)
    ("e8", "web", "p4", 6 * H),  # "old" is removed now, but it was personalised then
    ("e9", "store", "p9", 4 * H),  # before the definitions were applied (APPLIED)
    ("e10", "web", "p1", -2 * H),  # the day before: no segment was live yet
]

APPLIED = 5 * H  # every definition was applied then (segment_definitions.applied_at)


Table = tuple[str, tuple[str, ...], list[tuple[Any, ...]]]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(D0 + seconds, UTC)


def _tables() -> list[Table]:
    """The history: (table, columns, rows)."""
    return [
        (
            "segment_definitions",
            ("segment_id", "version", "deleted", "kind", "personalised", "hash", "applied_at"),
            [
                (sid, version, deleted, kind, flag, f"h{version}", _at(APPLIED))
                for sid, version, deleted, kind, flag in _DEFINITIONS
            ],
        ),
        (
            "segment_changes",
            (
                "change_id",
                "person_id",
                "segment_id",
                "subject",
                "change",
                "seq",
                "at",
                "at_ms",
                "trigger",
                "email",
            ),
            [
                (
                    f"{person}-{sid}-{subject}-{seq}",
                    person,
                    sid,
                    subject,
                    "entered" if seq % 2 else "exited",
                    seq,
                    _at(at),
                    (D0 + at) * 1000,
                    "event",
                    f"{person}@example.com",
                )
                for person, sid, subject, seq, at in _CHANGES
            ],
        ),
        (
            "event_persons",
            (
                "message_id",
                "channel",
                "type",
                "event",
                "person_id",
                "timestamp",
                "timestamp_ms",
                "resolved_at_ms",
            ),
            [
                (mid, channel, "track", "Page Viewed", person, _at(at), (D0 + at) * 1000, (D0 + at) * 1000)
                for mid, channel, person, at in _EVENTS
            ],
        ),
    ]


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"toDateTime({int(value.timestamp())})"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def _insert_sql(table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """One INSERT with literal values, for chDB."""
    values = ", ".join("(" + ", ".join(_literal(value) for value in row) + ")" for row in rows)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"


def _day(offset: int) -> date:
    return date(2026, 1, 1) + timedelta(days=offset)


def _check(run: Callable[[str], list[tuple[Any, ...]]]) -> None:
    """Known answers; ``run`` returns rows with values as strings or Python types."""
    count = [str(value) for value in run(kpi.sql("segments_count"))[0]]
    # defined: vip, lapsed, bought; segments: vip, lapsed; personalised: vip; with members: all three;
    # memberships: p1 and p2 in vip, p3 in lapsed, p2 twice in bought; persons: p1, p2, p3
    assert count == ["3", "2", "1", "1", "3", "5", "3"]

    sizes = {
        (str(sid), str(day)): (int(members), int(entered), int(exited))
        for sid, day, members, entered, exited in run(kpi.sql("segment_sizes_by_day"))
    }
    assert sizes[("vip", str(_day(0)))] == (2, 2, 0)
    assert sizes[("vip", str(_day(1)))] == (1, 0, 1)
    assert sizes[("vip", str(_day(2)))] == (2, 1, 0)
    assert sizes[("vip", str(_day(3)))] == (2, 0, 0)  # days without changes are filled in
    assert ("bought", str(_day(0))) not in sizes  # a segment's days start at its first change
    assert sizes[("bought", str(_day(1)))] == (2, 2, 0)
    assert sizes[("old", str(_day(0)))] == (1, 1, 0)
    assert sizes[("old", str(_day(1)))] == (0, 0, 1)
    assert sizes[("lapsed", str(_day(-1)))] == (1, 1, 0)  # the copy counts once, at its earliest time
    assert sizes[("lapsed", str(_day(0)))] == (1, 0, 0)
    assert sizes[("lapsed", str(_day(40)))] == (1, 0, 0)

    share = {
        (str(day), str(channel)): (
            int(events),
            int(live),
            int(personalised),
            None if ratio is None or str(ratio) in ("", "None", "\\N", "NULL") else float(ratio),
            int(persons),
            int(pp),
            str(note),
        )
        for day, channel, events, live, personalised, ratio, persons, pp, note in run(
            kpi.sql("personalised_traffic_share")
        )
    }
    live_from = f"segments live from {_at(APPLIED):%Y-%m-%d %H:%M:%S}"
    assert share == {
        (str(_day(-1)), "web"): (1, 0, 0, None, 1, 0, "before segments were live"),
        (str(_day(0)), "app"): (2, 2, 1, 0.5, 2, 1, ""),
        (str(_day(0)), "store"): (2, 1, 0, 0.0, 1, 0, live_from),
        (str(_day(0)), "web"): (3, 3, 2, 0.6667, 3, 2, ""),
        (str(_day(1)), "store"): (1, 1, 1, 1.0, 1, 1, ""),
        (str(_day(1)), "web"): (1, 1, 0, 0.0, 1, 0, ""),
    }


def test_segment_kpis_give_known_answers_on_clickhouse_18(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    for table, columns, rows in _tables():
        client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)
    _check(lambda sql: [tuple(row) for row in client.execute(sql)])
    assert "personalised_share" in kpi.run(client, "personalised_traffic_share").render()


def test_segment_kpis_give_the_same_answers_on_modern_clickhouse_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "segment_kpis")
    try:
        migrations.apply(backend, "segment_kpis")
        for table, columns, rows in _tables():
            backend.execute(_insert_sql(table, columns, rows))
        _check(backend.rows)
    finally:
        backend.close()
