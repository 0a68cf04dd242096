"""Calls with skewed clocks, impossible times, 30-digit ids, traits beside identifiers and a malformed
advertising id, posted to the real collector, carried by the real broker, and read back from ClickHouse
18.16 through the history sink: what lands, with which time, and what is refused with its reason.
Migration 0008 (original_timestamp_ms) on an existing database, on ClickHouse 18.16 and on chDB."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings, Source
from streams.sinks.events import HistorySink
from streams.warehouse import migrations
from tests.integration.api.test_collector_api import auth, running_collector
from tests.integration.sinks.test_dedup_by_message_id import running_worker, wait_for

pytestmark = pytest.mark.integration

KEY = "wk_it_clock_web_01"
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
DIGITS = "123456789012345678901234567890"


def iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def test_what_the_collector_keeps_of_clocks_numbers_and_identifiers(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(sources={KEY: Source(name="shop", channel="web")}, sink_flush_interval_s=0.2)
    now = datetime.now(UTC)
    slow = timedelta(hours=2)
    happened = now - timedelta(minutes=5)
    batch = [
        # A browser two hours slow: its own sentAt says so.
        {"type": "page", "messageId": "slow", "anonymousId": "anon-1", "timestamp": iso(happened - slow),
         "sentAt": iso(now - slow)},
        {"type": "track", "event": "Viewed", "messageId": "y2200", "userId": "u-future",
         "timestamp": "2200-01-01T00:00:00.000Z"},
        {"type": "track", "event": "Viewed", "messageId": "y9999", "userId": "u-future",
         "timestamp": "9999-12-31T23:59:59.000Z"},
        {"type": "identify", "messageId": "both", "userId": "u-both", "identifiers": {"loyaltyCard": "LC-7"},
         "traits": {"email": "ann@example.com"}},
        {"type": "track", "event": "Viewed", "messageId": "adid", "userId": "u-ad",
         "context": {"device": {"advertisingId": "not-a-uuid"}}},
    ]  # fmt: skip
    # JSON text written by hand: a 30-digit number, as a shop's backend would serialise it.
    big = f'{{"type": "identify", "messageId": "big", "userId": {DIGITS}, "traits": {{"points": {DIGITS}}}}}'
    body = httpx.Request("POST", "/", json={"batch": batch}).content.decode()
    body = body[:-2] + ", " + big + "]}"

    with running_collector(settings) as server:
        headers = {**auth(KEY), "Content-Type": "application/json"}
        answer = httpx.post(f"{server.url}/v1/batch", content=body, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert (result["accepted"], result["rejected"]) == (3, 3)
        fields = {error["index"]: error["field"] for error in result["errors"]}
        assert fields == {1: "timestamp", 2: "timestamp", 4: "context.device.advertisingId"}

        single = httpx.post(
            f"{server.url}/v1/track",
            json={"event": "Viewed", "messageId": "adid-single", "userId": "u-ad",
                  "context": {"device": {"advertisingId": "ABC123"}}},
            headers=auth(KEY),
            timeout=30,
        )  # fmt: skip
        assert single.status_code == 400, single.text
        assert single.json()["field"] == "context.device.advertisingId"
        accepted_ad = httpx.post(
            f"{server.url}/v1/track",
            json={"event": "Viewed", "messageId": "adid-ok", "userId": "u-ad",
                  "context": {"device": {"advertisingId": IDFA}}},
            headers=auth(KEY),
            timeout=30,
        )  # fmt: skip
        assert accepted_ad.status_code == 200, accepted_ad.text

    history = HistorySink(settings)
    with running_worker(history):
        wait_for(lambda: history.stats.events_written >= 4, 60, "the accepted events in ClickHouse")
        wait_for(lambda: history.stats.invalid_written >= 4, 60, "the refused calls in invalid_events")

    client = clickhouse_client(settings, settings.clickhouse_database)
    rows = client.execute(
        "SELECT message_id, timestamp_ms, original_timestamp_ms, user_id, email, loyalty_card, traits, "
        "advertising_id FROM events_dedup ORDER BY message_id"
    )
    landed = {row[0]: row[1:] for row in rows}
    assert set(landed) == {"slow", "both", "big", "adid-ok"}

    corrected_ms, original_ms = landed["slow"][0], landed["slow"][1]
    assert original_ms == ms(happened - slow)
    # Corrected to when it happened, give or take the request's own latency.
    assert 0 <= corrected_ms - ms(happened) < 5_000, corrected_ms - ms(happened)
    assert landed["both"][3:5] == ("ann@example.com", "LC-7")
    assert landed["big"][2] == DIGITS and landed["big"][5] == f'{{"points":{DIGITS}}}'
    assert landed["adid-ok"][6] == IDFA
    # No accepted event has a time from the future, so no person can be "last seen" there.
    assert max(row[0] for row in landed.values()) <= ms(datetime.now(UTC))

    refused = client.execute("SELECT stage, field, reason, original FROM invalid_events ORDER BY reason")
    by_field: dict[str, list[str]] = {}
    for stage, field, reason, _original in refused:
        assert stage == "collector"
        by_field.setdefault(field, []).append(reason)
    assert sorted(by_field) == ["context.device.advertisingId", "timestamp"]
    assert len(by_field["context.device.advertisingId"]) == 2  # the batch item and the single call
    assert any(
        r.startswith("timestamp: 2200-01-01T00:00:00.000Z is more than 24 hours")
        for r in by_field["timestamp"]
    )
    assert any(r.startswith("timestamp: 9999-12-31T23:59:59.000Z") for r in by_field["timestamp"])


def _upgrade(backend: Any, database: str) -> list[tuple[Any, ...]]:
    every = migrations.discover()
    migrations.apply(backend, database, [m for m in every if m.version < 8])
    backend.execute(
        "INSERT INTO events (message_id, type, channel, timestamp, timestamp_ms, received_at) SELECT "
        "'old', 'track', 'web', toDateTime('2026-03-01 10:00:00'), 1772359200123, "
        "toDateTime('2026-03-01 10:00:01')"
    )
    migrations.apply(backend, database, every)
    backend.execute(
        "INSERT INTO events (message_id, type, channel, timestamp, timestamp_ms, original_timestamp_ms, "
        "received_at) SELECT 'new', 'track', 'web', toDateTime('2026-03-02 10:00:00'), 1772445600000, "
        "1772438400000, toDateTime('2026-03-02 10:00:00')"
    )
    rows: list[tuple[Any, ...]] = backend.rows(
        "SELECT message_id, timestamp_ms, original_timestamp_ms FROM events_dedup ORDER BY message_id"
    )
    return [tuple(int(v) if i else str(v) for i, v in enumerate(row)) for row in rows]


EXPECTED = [("new", 1772445600000, 1772438400000), ("old", 1772359200123, 1772359200123)]


def test_migration_0008_on_clickhouse_18_gives_old_rows_their_timestamp_as_original(stack: Any) -> None:
    database = f"test_0008_{int(time.time() * 1000)}"
    settings = stack.settings(clickhouse_database=database)

    def client(name: str) -> Any:
        return clickhouse_client(settings, name)

    try:
        assert _upgrade(migrations.ClickHouseBackend(client, database), database) == EXPECTED
    finally:
        client("default").execute(f"DROP DATABASE IF EXISTS {database}")


def test_migration_0008_on_chdb_gives_old_rows_their_timestamp_as_original(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "time_test")
    try:
        assert _upgrade(backend, "time_test") == EXPECTED
    finally:
        backend.close()
