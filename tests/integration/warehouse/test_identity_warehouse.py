"""Identity tables, views and KPI queries on ClickHouse 18.16 and chDB, and the person look-up through
the store, the CLI and the HTTP API. The data is tests/integration/stages/identity/identity_scenario.py,
loaded twice (at-least-once delivery) through the sink's own column code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.api.persons import create_persons_app
from streams.api.server import ThreadedServer
from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.identifiers import Identifier, IdKind
from streams.settings import Settings
from streams.warehouse import kpi, migrations
from streams.warehouse.persons import PersonNotFound, PersonStore
from streams.warehouse.writer import ClickHouseWriter
from tests.integration.stages.identity import identity_scenario as scenario
from tests.integration.stages.identity.identity_scenario import ANN_EMAIL, A, B, C, D

pytestmark = pytest.mark.integration

TOKEN = "test-token-0123456789"


def _norm(value: Any) -> Any:
    text = str(value)
    try:
        return round(float(text), 4)
    except ValueError:
        return text


def _rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(_norm(value) for value in row) for row in rows]


# Known answers, the same on both servers (values normalised by _norm).
EXPECTED_KPIS: dict[str, list[tuple[Any, ...]]] = {
    # persons, identifiers, per person, known customers, anonymous persons, merged person ids
    "identity_persons": [(2, 7, 3.5, 2, 0, 2)],
    "identity_identifiers_per_person": [("2", 1, 0.5, 2), ("5-9", 1, 0.5, 5)],
    # day, channel, events, identified, share, attributed, share, sessions, identified, share, attr., share
    "identity_identified_share": [
        ("2026-01-05", "web", 2, 0, 0, 2, 1, 1, 0, 0, 1, 1),
        ("2026-01-05", "app", 1, 0, 0, 1, 1, 1, 0, 0, 1, 1),
        ("2026-01-06", "web", 2, 2, 1, 2, 1, 2, 2, 1, 2, 1),
        ("2026-01-06", "store", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1),
    ],
    # day, merges, identifiers moved, rejections, limit, merge_limit
    "identity_changes_by_day": [("2026-01-05", 1, 1, 0, 0, 0), ("2026-01-06", 1, 2, 1, 0, 1)],
}

HISTORY_SQL = (
    "SELECT message_id, resolved_person_id FROM events_by_person WHERE person_id = '{pid}' "
    "ORDER BY message_id"
)
CANONICAL_SQL = "SELECT person_id, canonical_person_id FROM person_canonical ORDER BY person_id"
IDENTITIES_SQL = "SELECT identifier, person_id FROM identities_current ORDER BY identifier"


def _load(settings: Settings) -> None:
    writer = ClickHouseWriter(settings)
    try:
        for _ in range(2):  # delivered twice: every read below must still count each record once
            for table, columns in scenario.batch().tables():
                writer.insert(table, columns.names, columns.columns, len(columns))
    finally:
        writer.close()


@pytest.fixture(scope="module")
def loaded(stack: Any) -> Iterator[Settings]:
    """One migrated database with the scenario loaded twice, shared by the read-only tests here."""
    from streams.dev.stack import apply_migrations

    settings = stack.settings(clickhouse_database=f"test_idwh_{os.getpid()}", api_tokens=TOKEN)
    apply_migrations(settings, report=lambda _m: None)
    _load(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield settings
    finally:
        client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        client.disconnect()


def _expected_history() -> dict[str, list[tuple[Any, ...]]]:
    return {
        C: [("e1", A), ("e2", A), ("e3", B), ("e4", C), ("e5", C)],
        D: [("e6", D)],
        A: [],
        B: [],
    }


def test_events_by_person_gives_full_history_under_survivor_on_clickhouse_18(loaded: Settings) -> None:
    client = clickhouse_client(loaded, loaded.clickhouse_database)
    for pid, expected in _expected_history().items():
        assert client.execute(HISTORY_SQL.format(pid=pid)) == expected
    assert client.execute(CANONICAL_SQL) == sorted([(A, C), (B, C)])
    identities = dict(client.execute(IDENTITIES_SQL))
    # dev-b was only ever assigned to B; the merge B -> C maps it to C.
    assert identities["device_id:dev-b"] == C and identities[ANN_EMAIL] == C
    assert sorted(set(identities.values())) == sorted({C, D})
    assert client.execute("SELECT count() FROM identity_merges FINAL") == [(2,)]


def test_identity_kpis_give_known_answers_on_clickhouse_18(loaded: Settings) -> None:
    client = clickhouse_client(loaded, loaded.clickhouse_database)
    for name, expected in EXPECTED_KPIS.items():
        assert _rows(kpi.run(client, name).rows) == _rows(expected), name


def test_identity_views_and_kpis_give_the_same_answers_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "identity_test")
    try:
        migrations.apply(backend, "identity_test")
        for _ in range(2):
            for statement in scenario.json_inserts(scenario.batch()):
                backend.execute(statement)
        for pid, expected in _expected_history().items():
            assert backend.rows(HISTORY_SQL.format(pid=pid)) == expected
        assert backend.rows(CANONICAL_SQL) == sorted([(A, C), (B, C)])
        assert dict(backend.rows(IDENTITIES_SQL))["device_id:dev-b"] == C
        for name, expected in EXPECTED_KPIS.items():
            assert _rows(backend.rows(kpi.sql(name))) == _rows(expected), name
    finally:
        backend.close()


def test_lookup_by_any_identifier_of_a_merged_person_gives_the_survivor(loaded: Settings) -> None:
    store = PersonStore(clickhouse_client(loaded, loaded.clickhouse_database))
    view = store.lookup(Identifier(IdKind.DEVICE_ID, "dev-b"), events=3)
    assert view.person_id == C
    assert set(view.person_ids) == {A, B, C}
    assert [i.identifier for i in view.identifiers] == sorted(
        ["anonymous_id:web-a1", "device_id:dev-b", "customer_id:cust-42", "loyalty_card:LC123", ANN_EMAIL]
    )
    assert [m.change_id for m in view.merges] == ["chg-1", "chg-2"]
    assert [r.change_id for r in view.rejections] == ["chg-3"]
    assert {(a.channel, a.events) for a in view.channels} == {("web", 3), ("app", 1), ("store", 1)}
    assert view.event_count == 5
    assert [e.message_id for e in view.recent_events] == ["e4", "e5", "e3"]
    # Event time only: the identifiers' received times (from 2026-01-04 08:00) are another clock.
    assert view.first_seen == min(a.first_seen for a in view.channels)
    assert view.first_seen is not None and view.first_seen.isoformat().startswith("2026-01-05")
    assert view.last_seen is not None and view.last_seen.isoformat().startswith("2026-01-06T15:00")
    with pytest.raises(PersonNotFound, match=r"email:nobody@shop\.com"):
        store.lookup(Identifier(IdKind.EMAIL, "nobody@shop.com"))


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_cli_person_show_finds_email_in_odd_case_and_whitespace(loaded: Settings) -> None:
    result = _cli(loaded, "person", "show", "  ANN@Shop.COM ", "--json", "--events", "2")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["person_id"] == C and data["looked_up"] == ANN_EMAIL
    assert sorted(data["merged_person_ids"]) == sorted([A, B])
    assert data["event_count"] == 5 and [e["message_id"] for e in data["recent_events"]] == ["e4", "e5"]
    text = _cli(loaded, "person", "show", "ann@shop.com", "--kind", "email")
    assert text.returncode == 0 and f"person     {C}" in text.stdout
    assert f"{B} -> {C}" in text.stdout


def test_cli_person_show_unknown_and_unusable_identifiers_say_why(loaded: Settings) -> None:
    unknown = _cli(loaded, "person", "show", "nobody@shop.com")
    assert unknown.returncode == 1
    assert "no person has identifier email:nobody@shop.com" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    unusable = _cli(loaded, "person", "show", "test@test.com")
    assert unusable.returncode == 2 and "is not a usable identifier (blocked" in unusable.stderr
    no_kind = _cli(loaded, "person", "show", "12345")
    assert no_kind.returncode == 2 and "kind:value" in no_kind.stderr


@pytest.fixture(scope="module")
def api_url(loaded: Settings) -> Iterator[str]:
    with ThreadedServer(create_persons_app(loaded), free_port()) as server:
        yield server.url


def test_http_lookup_finds_email_in_odd_case_and_whitespace(api_url: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    reply = httpx.get(
        f"{api_url}/v1/persons/lookup", params={"identifier": " Ann@SHOP.com", "kind": "email"}, headers=auth
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["person_id"] == C and len(body["recent_events"]) == 5
    assert {m["change_id"] for m in body["merges"]} == {"chg-1", "chg-2"}
    by_key = httpx.get(
        f"{api_url}/v1/persons/lookup", params={"identifier": "loyalty_card:lc-123"}, headers=auth
    )
    assert by_key.status_code == 200 and by_key.json()["person_id"] == C


def test_http_lookup_refuses_without_token_and_404s_unknown(api_url: str) -> None:
    url = f"{api_url}/v1/persons/lookup"
    params = {"identifier": "ann@shop.com"}
    assert httpx.get(url, params=params).status_code == 401
    wrong = httpx.get(url, params=params, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    missing = httpx.get(url, params={"identifier": "nobody@shop.com"}, headers=auth)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no person has identifier email:nobody@shop.com"
    bad = httpx.get(url, params={"identifier": "x", "kind": "shoe_size"}, headers=auth)
    assert bad.status_code == 400 and "unknown identifier kind 'shoe_size'" in bad.json()["detail"]


def test_kpi_identity_cli_prints_the_tables(loaded: Settings) -> None:
    result = _cli(loaded, "kpi", "identity", "--days", "100000")
    assert result.returncode == 2  # --days is bounded
    result = _cli(loaded, "kpi", "identity")
    assert result.returncode == 0, result.stderr
    assert "== identity_identified_share" in result.stdout and "2026-01-06  store" in result.stdout
    recent = _cli(loaded, "kpi", "identity", "--days", "7")
    assert recent.returncode == 0, recent.stderr
    assert "2026-01-06" not in recent.stdout  # the scenario is older than a week


def test_canonical_person_does_not_depend_on_merge_event_times(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    # A -> B happened first, but its triggering event carries a later client time than B -> C's.
    aliases = [("A", "B", "m1", 10), ("A", "C", "m2", 5), ("B", "C", "m2", 5)]
    expected = [("A", "C"), ("B", "C")]
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    client.execute(
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) VALUES", aliases
    )
    assert client.execute(CANONICAL_SQL) == expected
    store = PersonStore(client)
    assert store.canonical("A") == "C" and store.canonical("C") == "C"
    assert set(store.person_ids("C")) == {"A", "B", "C"}
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "alias_test")
    try:
        migrations.apply(backend, "alias_test")
        values = ", ".join(f"('{p}', '{c}', '{m}', {v})" for p, c, m, v in aliases)
        backend.execute(
            f"INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) VALUES {values}"
        )
        assert backend.rows(CANONICAL_SQL) == expected
    finally:
        backend.close()


def test_person_show_gives_current_segments_and_names_each_clock(loaded: Settings) -> None:
    client = clickhouse_client(loaded, loaded.clickhouse_database)
    columns = "change_id, person_id, segment_id, subject, change, seq, at, at_ms"
    rows = [
        ("s1", C, "vip", "", "entered", 1, datetime(2026, 1, 6, 16), 1767715200000),
        ("s2", C, "lapsed", "", "entered", 1, datetime(2026, 1, 6, 16), 1767715200000),
        ("s3", C, "lapsed", "", "exited", 2, datetime(2026, 1, 6, 17), 1767718800000),
        ("s4", C, "already-purchased", "product:P1", "entered", 1, datetime(2026, 1, 6, 18), 1767722400000),
        ("s5", D, "vip", "", "entered", 1, datetime(2026, 1, 6, 16), 1767715200000),
    ]
    try:
        client.execute(f"INSERT INTO segment_changes ({columns}) VALUES", rows)
    finally:
        client.disconnect()
    shown = _cli(loaded, "person", "show", "ann@shop.com", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert [(m["segment_id"], m["subject"]) for m in data["segments"]] == [
        ("already-purchased", "product:P1"),
        ("vip", ""),
    ]
    assert data["segments"][1]["since"] == "2026-01-06T16:00:00Z"
    assert data["time_basis"]["identifiers.first_seen"].startswith("received time")
    assert data["time_basis"]["recent_events"].startswith("event time")
    text = _cli(loaded, "person", "show", "ann@shop.com").stdout
    assert "segments now (2;" in text and "already-purchased product:P1" in text
    assert "(event time)" in text and "first received" in text


def test_read_api_health_and_ready_say_ok_and_need_no_token(api_url: str) -> None:
    for path in ("/health", "/ready"):
        reply = httpx.get(f"{api_url}{path}")
        assert reply.status_code == 200 and reply.json()["status"] == "ok", reply.text


@pytest.mark.parametrize("problem", ["clickhouse down", "not migrated"])
def test_read_api_ready_is_503_with_the_reason_while_alive(loaded: Settings, problem: str) -> None:
    from streams.dev.process import release_port

    closed = free_port()
    if problem == "clickhouse down":
        settings = loaded.model_copy(update={"clickhouse_port": closed})
    else:
        settings = loaded.model_copy(update={"clickhouse_database": "system"})
    try:
        with ThreadedServer(create_persons_app(settings), free_port()) as server:
            reply = httpx.get(f"{server.url}/ready", timeout=30)
            alive = httpx.get(f"{server.url}/health", timeout=30)
    finally:
        release_port(closed)
    assert reply.status_code == 503, reply.text
    assert alive.status_code == 200, alive.text
    message = reply.json()["message"]
    assert "\n" not in message
    if problem == "clickhouse down":
        assert f":{closed}/" in message
    else:
        assert "run omniseg migrate" in message
