"""Erasure in ClickHouse on 18.16 and chDB: a person merged from several identifiers across channels is
found whole, deleted from every table, and the proof (verify) finds nothing of them; another person's
rows stay, and removal rows of audience deltas stay."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import apply_migrations, clickhouse_client
from streams.warehouse import migrations
from streams.warehouse.erasure import DriverSql, Sql, audience_hashes, collect, delete, verify
from streams.warehouse.sql_text import quote

pytestmark = pytest.mark.integration

# Ann: web cookie (A), app device (B) merged into C (customer id, email, store loyalty card).
A, B, C = "pid-ann-web", "pid-ann-app", "pid-ann-cust"
DAN = "pid-dan"
DAN_AT = "2026-01-06 11:00:00"
ANN_KEYS = ["anonymous_id:web-a1", "device_id:dev-b", "customer_id:cust-42", "email:ann@shop.com",
            "loyalty_card:LC123"]  # fmt: skip
ANN_HASH = sorted(audience_hashes(["email:ann@shop.com"]))[0]
DAN_HASH = sorted(audience_hashes(["email:dan@shop.com"]))[0]


_DATE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    if _DATE.match(str(value)):
        return f"toDateTime({quote(str(value))})"
    return quote(str(value))


def _insert(table: str, columns: str, rows: list[tuple[Any, ...]]) -> str:
    """INSERT ... SELECT of literals: runs on clickhouse-driver (which sends VALUES as data) and chDB."""
    selects = " UNION ALL ".join("SELECT " + ", ".join(_literal(v) for v in row) for row in rows)
    return f"INSERT INTO {table} ({columns}) {selects}"


INSERTS: list[tuple[str, str, list[tuple[Any, ...]]]] = [
    ("events", "message_id, type, channel, source, event, anonymous_id, user_id, email, device_id, "
     "loyalty_card, traits, properties, timestamp, received_at", [
        ("e1", "page", "web", "web-src", "", "web-a1", "", "", "", "", "{}", "{}",
         "2026-01-05 09:00:00", "2026-01-05 09:00:00"),
        ("e3", "screen", "app", "app-src", "", "app-b1", "", "", "dev-b", "", "{}", "{}",
         "2026-01-05 12:00:00", "2026-01-05 12:00:00"),
        ("e4", "track", "store", "store-src", "Order Completed", "", "cust-42", "", "", "LC123", "{}", "{}",
         "2026-01-06 15:00:00", "2026-01-06 15:00:00"),
        ("e5", "identify", "web", "web-src", "", "web-a1", "cust-42", " Ann@Shop.com ", "", "",
         '{"email": "Ann@Shop.com", "name": "Ann"}', "{}", "2026-01-06 10:00:00", "2026-01-06 10:00:00"),
        # Never resolved (suppressed or refused): found by its raw email alone.
        ("e7", "track", "email", "esp", "Email Opened", "", "", "ann@shop.com", "", "", "{}", "{}",
         "2026-01-07 08:00:00", "2026-01-07 08:00:00"),
        ("e6", "track", "web", "web-src", "Signed In", "web-d1", "cust-99", "dan@shop.com", "", "", "{}",
         '{"note": "not ann"}', "2026-01-06 11:00:00", "2026-01-06 11:00:00"),
    ]),
    ("event_persons", "message_id, channel, type, event, person_id, identifiers, anonymous_id, user_id, "
     "timestamp, received_at, resolved_at", [
        ("e1", "web", "page", "", A, ["anonymous_id:web-a1"], "web-a1", "", "2026-01-05 09:00:00",
         "2026-01-05 09:00:00", "2026-01-05 09:00:00"),
        ("e3", "app", "screen", "", B, ["device_id:dev-b"], "app-b1", "", "2026-01-05 12:00:00",
         "2026-01-05 12:00:00", "2026-01-05 12:00:00"),
        ("e4", "store", "track", "Order Completed", C, ["customer_id:cust-42", "loyalty_card:LC123"], "",
         "cust-42", "2026-01-06 15:00:00", "2026-01-06 15:00:00", "2026-01-06 15:00:00"),
        ("e5", "web", "identify", "", C, ["customer_id:cust-42", "email:ann@shop.com", "anonymous_id:web-a1"],
         "web-a1", "cust-42", "2026-01-06 10:00:00", "2026-01-06 10:00:00", "2026-01-06 10:00:00"),
        ("e6", "web", "track", "Signed In", DAN, ["customer_id:cust-99", "anonymous_id:web-d1"], "web-d1",
         "cust-99", "2026-01-06 11:00:00", "2026-01-06 11:00:00", "2026-01-06 11:00:00"),
    ]),
    ("identities", "identifier, kind, value, person_id, version, first_seen, at", [
        ("anonymous_id:web-a1", "anonymous_id", "web-a1", A, 1, "2026-01-05 09:00:00", "2026-01-05 09:00:00"),
        ("device_id:dev-b", "device_id", "dev-b", B, 2, "2026-01-05 12:00:00", "2026-01-05 12:00:00"),
        ("customer_id:cust-42", "customer_id", "cust-42", C, 3, "2026-01-06 10:00:00", "2026-01-06 10:00:00"),
        ("email:ann@shop.com", "email", "ann@shop.com", C, 3, "2026-01-06 10:00:00", "2026-01-06 10:00:00"),
        ("anonymous_id:web-a1", "anonymous_id", "web-a1", C, 4, "2026-01-05 09:00:00", "2026-01-06 10:00:00"),
        ("loyalty_card:LC123", "loyalty_card", "LC123", C, 5, "2026-01-06 15:00:00", "2026-01-06 15:00:00"),
        ("customer_id:cust-99", "customer_id", "cust-99", DAN, 6, DAN_AT, DAN_AT),
        ("anonymous_id:web-d1", "anonymous_id", "web-d1", DAN, 6, DAN_AT, DAN_AT),
    ]),
    ("person_aliases", "person_id, canonical_person_id, change_id, version", [
        (A, B, "m1", 1), (B, C, "m2", 2),
    ]),
    ("identity_merges", "change_id, person_id, merged_person_id, merged_person_ids, identifiers, reason, "
     "message_id, channel, at", [
        ("m1", B, A, [A], ["anonymous_id:web-a1"], "", "e3", "app", "2026-01-05 12:00:00"),
        ("m2", C, B, [A, B], ["device_id:dev-b", "anonymous_id:web-a1"], "", "e5", "web",
         "2026-01-06 10:00:00"),
    ]),
    # Dan's event tried to link Ann's phone: the rejection names her identifier, so it goes too.
    ("identity_rejections", "change_id, person_id, identifier, identifiers, conflicting_person_id, reason, "
     "message_id, channel, at", [
        ("r1", DAN, "customer_id:cust-42", ["customer_id:cust-42"], C, "limit:customer_id", "e6", "web",
         "2026-01-06 11:00:00"),
    ]),
    ("segment_changes", "change_id, person_id, segment_id, subject, change, seq, at, trigger, reason, "
     "message_id, email, user_id", [
        ("c1", C, "buyers", "", "entered", 1, "2026-01-06 15:00:00", "event", "bought", "e4", "ann@shop.com",
         "cust-42"),
        ("c2", C, "buyers", "", "exited", 2, "2026-01-08 15:00:00", "erasure", "erased", "", "", ""),
        ("c3", DAN, "buyers", "", "entered", 1, "2026-01-06 11:00:00", "event", "bought", "e6",
         "dan@shop.com", "cust-99"),
    ]),
    ("audience_members", "destination_id, audience_id, kind, hash, added, kafka_offset, at", [
        ("meta", "buyers", "email", ANN_HASH, 1, 1, "2026-01-06 15:00:00"),
        ("meta", "buyers", "email", DAN_HASH, 1, 2, "2026-01-06 11:00:00"),
    ]),
    ("audience_deltas", "destination_id, audience_id, kind, hash, added, kafka_offset, at", [
        ("meta", "buyers", "email", ANN_HASH, 1, 1, "2026-01-06 15:00:00"),
        ("meta", "buyers", "email", DAN_HASH, 1, 2, "2026-01-06 11:00:00"),
        ("meta", "buyers", "email", ANN_HASH, 0, 3, "2026-01-08 15:00:00"),  # the erasure's removal
    ]),
    ("usecase_exposures", "usecase_id, version, person_id, arm, at, segment_id, subject, change_id", [
        ("u1", 1, C, "treatment", "2026-01-06 15:00:00", "buyers", "", "c1"),
        ("u1", 1, DAN, "control", "2026-01-06 11:00:00", "buyers", "", "c3"),
    ]),
    ("invalid_events", "stage, reason, field, source, position, original, received_at", [
        ("collector", "bad timestamp", "timestamp", "web-src", "", '{"userId": "x", "email": "ANN@shop.com"}',
         "2026-01-07 00:00:00"),
        ("collector", "bad timestamp", "timestamp", "web-src", "", '{"email": "dan@shop.com"}',
         "2026-01-07 00:00:00"),
    ]),
]  # fmt: skip

# Rows that must stay, per table (Dan's, and the removal delta).
KEPT = {
    "events": 1, "event_persons": 1, "identities": 2, "person_aliases": 0, "identity_merges": 0,
    "identity_rejections": 0, "segment_changes": 1, "audience_members": 1, "audience_deltas": 2,
    "usecase_exposures": 1, "invalid_events": 1,
}  # fmt: skip


def _load(sql: Sql) -> None:
    for table, columns, rows in INSERTS:
        sql.execute(_insert(table, columns, rows))


def _erase_and_prove(sql: Sql, database: str) -> None:
    footprint = collect(sql, [C])
    assert footprint.person_ids == {A, B, C}
    assert footprint.identifiers == set(ANN_KEYS)
    assert footprint.raw["email"] == {" Ann@Shop.com "}
    assert verify(sql, database, footprint), "the proof must see the person before the erasure"
    lines: list[str] = []
    deleted = delete(sql, database, footprint, lines.append)
    assert deleted["events"] == 5 and deleted["event_persons"] == 4
    assert deleted["identities"] in (
        5,
        6,
    )  # a current ClickHouse collapses the insert block (optimize_on_insert)
    assert deleted["identity_rejections"] == 1 and deleted["audience_deltas"] == 1
    assert lines, "progress is reported"
    assert verify(sql, database, footprint) == {}
    for table, rows in KEPT.items():
        assert int(sql.rows(f"SELECT count() FROM {table}")[0][0]) == rows, table
    assert sql.rows("SELECT added FROM audience_deltas WHERE hash = " + quote(ANN_HASH)) in ([(0,)], [("0",)])
    # Nothing of the person is found again: a second erasure finds and deletes nothing.
    assert delete(sql, database, collect(sql, [C])) == {}


@pytest.fixture
def clickhouse_18(stack: Any) -> Iterator[tuple[Sql, str]]:
    settings = stack.settings(clickhouse_database=f"test_erasure_{os.getpid()}")
    apply_migrations(settings, report=lambda _m: None)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield DriverSql(client), settings.clickhouse_database
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        client.disconnect()


def test_erasure_deletes_a_merged_person_everywhere_and_proves_it_on_clickhouse_18(
    clickhouse_18: tuple[Sql, str],
) -> None:
    sql, database = clickhouse_18
    _load(sql)
    _erase_and_prove(sql, database)


def test_erasure_deletes_a_merged_person_everywhere_and_proves_it_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "erasure_test")
    try:
        migrations.apply(backend, "erasure_test")
        _load(backend)
        _erase_and_prove(backend, "erasure_test")
    finally:
        backend.close()
