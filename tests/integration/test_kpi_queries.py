"""Every KPI query in deploy/kpi/ runs on ClickHouse 18.16 and on a current ClickHouse (chDB)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streams.dev.stack import clickhouse_client
from streams.settings import Settings
from streams.warehouse import kpi, migrations

pytestmark = pytest.mark.integration

_ROWS = [
    # channel, event, anonymous_id, user_id, campaign, ts offset s, quantity, price
    ("web", "Product Viewed", "a1", "", "", 0, [], []),
    ("web", "Product Added", "a1", "", "", 10, [], []),
    ("web", "Order Completed", "a1", "", "", 20, [2.0], [5.0]),
    ("web", "Product Viewed", "a2", "", "", 30, [], []),
    ("store", "Order Completed", "", "u9", "", 40, [1.0, 3.0], [10.0, 1.5]),
    ("email", "Email Sent", "", "", "spring", 50, [], []),
    ("email", "Email Opened", "", "", "spring", 60, [], []),
]


def _insert(client: object, execute: Callable[[str, list[tuple[object, ...]]], object]) -> None:
    rows = [
        (f"m{i}", "track", channel, event, anon, user, campaign, 1_767_225_600 + offset, qty, price)
        for i, (channel, event, anon, user, campaign, offset, qty, price) in enumerate(_ROWS)
    ]
    execute(
        "INSERT INTO events (message_id, type, channel, event, anonymous_id, user_id, campaign_name, "
        "timestamp, line_quantity, line_unit_price) VALUES",
        rows,
    )


def test_every_kpi_query_gives_known_answers_on_clickhouse_18(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    _insert(client, client.execute)
    results = {name: kpi.run(client, name) for name in kpi.available()}
    by_channel = {row[0]: row for row in results["events_by_channel"].rows}
    assert by_channel["web"][1] == 4 and by_channel["store"][1] == 1
    funnel = dict((row[0], row[1:4]) for row in results["funnel_by_channel"].rows)
    assert funnel["web"] == (2, 1, 1)
    revenue = {row[0]: row for row in results["revenue_by_channel"].rows}
    assert revenue["web"][3] == 10.0 and revenue["store"][3] == 14.5
    email = results["email_engagement"].rows[0]
    assert email[:3] == ("spring", 1, 1)
    assert "channel" in results["events_by_channel"].render()


def test_every_kpi_query_runs_on_modern_clickhouse_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "kpi_test")
    try:
        migrations.apply(backend, "kpi_test")
        backend.execute(
            "INSERT INTO events (message_id, type, channel, event, anonymous_id, timestamp, "
            "line_quantity, line_unit_price) VALUES "
            "('m1', 'track', 'web', 'Product Viewed', 'a1', toDateTime('2026-01-01 00:00:00'), [], []), "
            "('m2', 'track', 'web', 'Order Completed', 'a1', toDateTime('2026-01-01 00:01:00'), [1], [4.5])"
        )
        for name in kpi.available():
            backend.rows(kpi.sql(name))  # raises if the SQL does not run on a current ClickHouse
        revenue = backend.rows(kpi.sql("revenue_by_channel"))
        assert revenue[0][0] == "web" and float(revenue[0][3]) == 4.5
    finally:
        backend.close()


def test_unknown_kpi_lists_the_known_ones() -> None:
    with pytest.raises(kpi.KpiError, match="events_by_channel"):
        kpi.sql("nope")
