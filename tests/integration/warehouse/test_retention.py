"""Retention of raw events on ClickHouse 18.16 (a delete) and on a current ClickHouse (chDB, a TTL): the
lifetime KPIs give the same answers before and after the old raw rows go, the rows past the retention
are gone and the newer ones stay, and a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from streams.dev.stack import apply_migrations, clickhouse_client
from streams.warehouse import kpi, migrations, retention
from streams.warehouse.sql_text import quote

pytestmark = pytest.mark.integration

RETENTION_DAYS = 30
# The KPIs that read history older than any retention: they read person_history and checkout_history.
LIFETIME_KPIS = (
    "revenue_by_channel",
    "returns_by_channel",
    "aov_by_channel",
    "clv_by_segment",
    "clv_top_persons",
    "repeat_visits_purchases",
)

# (message id, channel, type, event, person ('' = not resolved), revenue, days ago, seconds into the
# day, properties)
EVENTS = [
    ("a-p1", "web", "page", "", "A", 0.0, 100, 100, "{}"),
    ("a-p2", "web", "page", "", "A", 0.0, 99, 100, "{}"),
    ("a-cs", "web", "track", "Checkout Started", "A", 0.0, 100, 200, '{"value":120}'),
    ("a-o1", "web", "track", "Order Completed", "A", 100.0, 100, 300, "{}"),
    ("a2-o", "app", "track", "Order Completed", "A2", 30.0, 60, 300, "{}"),  # A2 was merged into A
    ("a-p3", "web", "page", "", "A", 0.0, 32, 100, "{}"),  # past the retention, inside the TTL's grace
    ("a-p4", "web", "page", "", "A", 0.0, 10, 100, "{}"),
    ("a-o2", "web", "track", "Order Completed", "A", 50.0, 10, 300, "{}"),
    ("b-s1", "app", "screen", "", "B", 0.0, 45, 100, "{}"),
    ("b-o1", "app", "track", "Order Completed", "B", 40.0, 45, 200, "{}"),
    ("b-cs", "app", "track", "Checkout Started", "B", 0.0, 5, 100, '{"revenue":35.5}'),
    ("b-r1", "app", "track", "Product Returned", "B", -40.0, 5, 200, "{}"),
    ("c-o1", "store", "track", "Order Completed", "C", 200.0, 200, 500, "{}"),
    ("c-o9", "store", "track", "Order Completed", "C", 20.0, 0, 60, "{}"),  # today
    ("x-cs", "web", "track", "Checkout Started", "", 0.0, 50, 100, '{"value":80}'),  # never resolved
]
DUPLICATES = ("a-o1", "c-o1")  # delivered twice: each counts once, before and after
INVALID = [("collector", "bad json", 100), ("collector", "too big", 2)]  # stage, reason, days ago
SEGMENTS = [("A", "vip"), ("C", "vip")]


@dataclass
class Warehouse:
    rows: Callable[[str], list[tuple[Any, ...]]]
    execute: Callable[[str], Any]
    today: date
    insert_rows: Callable[[str, list[tuple[Any, ...]]], Any] | None = None  # clickhouse-driver's block insert

    def at(self, days_ago: int, seconds: int) -> int:
        # The servers here run in UTC, which decides their toDate() and today().
        midnight = datetime(self.today.year, self.today.month, self.today.day, tzinfo=UTC)
        return int((midnight - timedelta(days=days_ago)).timestamp()) + seconds

    def insert(self, head: str, values: list[tuple[Any, ...]]) -> None:
        if self.insert_rows is not None:  # clickhouse-driver waits for a data block after VALUES
            self.insert_rows(f"{head} VALUES", values)
            return
        text = ", ".join(
            "(" + ", ".join(quote(v) if isinstance(v, str) else repr(v) for v in row) + ")" for row in values
        )
        self.execute(f"{head} VALUES {text}")

    def kpis(self) -> dict[str, list[tuple[str, ...]]]:
        """Each lifetime KPI's rows as text (the same on both backends), floats rounded."""
        return {
            name: [tuple(_text(v) for v in row) for row in self.rows(kpi.sql(name))] for name in LIFETIME_KPIS
        }

    def count(self, table: str, where: str = "1") -> int:
        return int(self.rows(f"SELECT count() FROM {table} WHERE {where}")[0][0])


def _text(value: Any) -> str:
    if value is None or value == "\\N":
        return "NULL"
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def _fill(warehouse: Warehouse) -> None:
    # The duplicates come in an insert of their own: a current ClickHouse collapses equal keys within
    # one inserted block, and both copies must be in the tables for the test to show they count once.
    for events in (EVENTS, [e for e in EVENTS if e[0] in DUPLICATES]):
        warehouse.insert(
            "INSERT INTO events "
            "(message_id, channel, type, event, timestamp, timestamp_ms, properties, received_at)",
            [
                (m, ch, ty, ev, warehouse.at(d, s), warehouse.at(d, s) * 1000, props, warehouse.at(d, s))
                for m, ch, ty, ev, _, _, d, s, props in events
            ],
        )
        warehouse.insert(
            "INSERT INTO event_persons (message_id, channel, type, event, person_id, revenue, timestamp, "
            "timestamp_ms, resolved_at_ms)",
            [
                (m, ch, ty, ev, p, r, warehouse.at(d, s), warehouse.at(d, s) * 1000, 1)
                for m, ch, ty, ev, p, r, d, s, _ in events
                if p
            ],
        )
    warehouse.insert(
        "INSERT INTO invalid_events (stage, reason, received_at, kafka_offset)",
        [(stage, reason, warehouse.at(d, 0), i) for i, (stage, reason, d) in enumerate(INVALID)],
    )
    warehouse.insert(
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version)",
        [("A2", "A", "m1", 1)],
    )
    warehouse.insert(
        "INSERT INTO segment_changes (change_id, person_id, segment_id, subject, change, seq, at, at_ms)",
        [(f"s{i}", p, seg, "", "entered", 1, warehouse.at(1, 0), 0) for i, (p, seg) in enumerate(SEGMENTS)],
    )


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Warehouse]:
    if request.param == "chdb":
        backend = migrations.ChdbBackend(str(tmp_path_factory.mktemp("chdb")), "retention_test")
        try:
            migrations.apply(backend, "retention_test")
            found = Warehouse(
                backend.rows, backend.execute, date.fromisoformat(backend.rows("SELECT today()")[0][0])
            )
            _fill(found)
            yield found
        finally:
            backend.close()
        return
    settings = request.getfixturevalue("stack").settings(clickhouse_database=f"test_{uuid.uuid4().hex[:10]}")
    apply_migrations(settings, report=lambda _msg: None)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        found = Warehouse(
            lambda sql: [tuple(row) for row in client.execute(sql)],
            client.execute,
            client.execute("SELECT today()")[0][0],
            client.execute,
        )
        _fill(found)
        yield found
    finally:
        client.disconnect()


def _settle(warehouse: Warehouse) -> None:
    """Wait for the mutations; on a current ClickHouse, also let the TTL remove what expired now."""
    assert retention.wait(warehouse.rows, timeout_s=120, poll_s=0.2)
    if retention.server(warehouse.rows).uses_ttl:
        for table in retention.RAW_TABLES:
            warehouse.execute(f"OPTIMIZE TABLE {table.name} FINAL")


def test_lifetime_kpis_stay_the_same_after_old_events_go(warehouse: Warehouse) -> None:
    before = warehouse.kpis()
    # The data gives the figures of every old event (a sanity check that the KPIs read them).
    clv = {row[0]: row[1:4] for row in before["clv_top_persons"]}
    assert clv["A"] == ("180.00", "3.00", "0.00") and clv["C"] == ("220.00", "2.00", "0.00")
    assert before["aov_by_channel"][-1][4:] == ("3.00", "3.00", "78.50")  # any: 3 checkouts, mean 78.5

    plan = retention.plan(warehouse.rows, RETENTION_DAYS)
    cutoff = warehouse.today - timedelta(days=RETENTION_DAYS)
    assert plan.cutoff == cutoff and plan.boundary.year == 1970 and plan.changes_anything
    uses_ttl = plan.server.uses_ttl
    grace = retention.TTL_GRACE_DAYS if uses_ttl else 0
    old = {
        "events": sum(1 for e in EVENTS if e[6] >= RETENTION_DAYS + grace) + len(DUPLICATES),
        "event_persons": sum(1 for e in EVENTS if e[4] and e[6] >= RETENTION_DAYS + grace) + len(DUPLICATES),
        "invalid_events": 1,
    }
    assert {state.table.name: state.older for state in plan.tables} == old

    outcome = retention.apply(warehouse.rows, warehouse.execute, plan)
    assert outcome.boundary == cutoff and outcome.folded_person_days > 0
    assert len(outcome.mutations) == 3
    _settle(warehouse)

    assert warehouse.kpis() == before
    # Past the retention: gone (on a current ClickHouse past the TTL, which keeps the grace days on
    # the folded tables); newer rows all stay.
    for name, column, folded in ((t.name, t.column, t.folded) for t in retention.RAW_TABLES):
        keep_from = cutoff - timedelta(days=grace if folded else 0)
        assert warehouse.count(name, f"toDate({column}) < toDate('{keep_from}')") == 0, name
    assert warehouse.count("events") == sum(1 for e in EVENTS if e[6] < RETENTION_DAYS + grace)
    assert warehouse.count("events", "message_id = 'a-p3'") == (1 if uses_ttl else 0)
    assert warehouse.count("invalid_events") == 1
    if uses_ttl:
        assert all(retention.current_ttl(warehouse.rows, t.name) for t in retention.RAW_TABLES)

    # Nothing left to do: a second run (the next scheduled one, or another worker's) changes nothing.
    again = retention.plan(warehouse.rows, RETENTION_DAYS)
    assert not again.changes_anything and again.boundary == cutoff and again.fold_lag_days == 0
    assert retention.run(warehouse.rows, warehouse.execute, RETENTION_DAYS) is None

    # New events still count: the days from the boundary on are read from the raw tables.
    warehouse.insert(
        "INSERT INTO event_persons (message_id, channel, type, event, person_id, revenue, timestamp, "
        "timestamp_ms, resolved_at_ms)",
        [("c-o10", "store", "track", "Order Completed", "C", 5.0, warehouse.at(0, 70), 0, 1)],
    )
    clv_after = {row[0]: row[1:3] for row in warehouse.kpis()["clv_top_persons"]}
    assert clv_after["C"] == ("225.00", "3.00")


def test_retention_off_changes_nothing(warehouse: Warehouse) -> None:
    plan = retention.plan(warehouse.rows, 0)
    assert not plan.enabled and plan.rows_to_delete == 0 and not plan.changes_anything
    assert retention.run(warehouse.rows, warehouse.execute, 0) is None
    assert warehouse.count("events") == len(EVENTS) + len(DUPLICATES)


def test_apply_command_is_a_dry_run_without_yes(stack: Any) -> None:
    settings = stack.settings(clickhouse_database=f"test_{uuid.uuid4().hex[:10]}")
    apply_migrations(settings, report=lambda _msg: None)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        warehouse = Warehouse(
            lambda sql: [tuple(row) for row in client.execute(sql)],
            client.execute,
            client.execute("SELECT today()")[0][0],
            client.execute,
        )
        _fill(warehouse)
        env = {
            **os.environ,
            "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "OMNISEG_EVENTS_RETENTION_DAYS": str(RETENTION_DAYS),
        }

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "streams.cli", "retention", *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )

        shown = cli("show")
        assert shown.returncode == 0, shown.stderr
        assert "retention: 30 days" in shown.stdout and "events" in shown.stdout
        dry = cli("apply")
        assert dry.returncode == 0, dry.stderr
        old = [e for e in EVENTS + [e for e in EVENTS if e[0] in DUPLICATES] if e[6] >= RETENTION_DAYS]
        to_delete = len(old) + sum(1 for e in old if e[4]) + 1  # events, event_persons, invalid_events
        assert f"would delete {to_delete} rows" in dry.stdout and "dry run: nothing changed" in dry.stdout
        assert warehouse.count("events") == len(EVENTS) + len(DUPLICATES)
        assert warehouse.count("retention_folds") == 0
        done = cli("apply", "--yes")
        assert done.returncode == 0, done.stderr
        assert "mutations done" in done.stdout
        assert warehouse.count("events") == sum(1 for e in EVENTS if e[6] < RETENTION_DAYS)
        assert "nothing to do" in cli("apply", "--yes").stdout
    finally:
        client.disconnect()
