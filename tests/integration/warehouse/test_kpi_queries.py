"""Every KPI query in deploy/kpi/ runs on ClickHouse 18.16 and on a current ClickHouse (chDB); the funnel
counts resolved persons and the revenue KPI gives the one revenue definition's figure on both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import clickhouse_client
from streams.domain.revenue import event_value, signed_revenue
from streams.settings import Settings
from streams.sinks.identity_tables import IdentityBatch
from streams.warehouse import kpi, migrations
from streams.warehouse.writer import ClickHouseWriter
from streams.wire.row_decoder import ResolvedDecoder
from tests.integration.stages.identity.identity_scenario import json_inserts
from tests.unit.domain.test_revenue import CALLS, resolved_record

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
    finally:
        backend.close()


def test_unknown_kpi_lists_the_known_ones() -> None:
    with pytest.raises(kpi.KpiError, match="events_by_channel"):
        kpi.sql("nope")


# One shopper, Ann, on two browsers (persons A and B, both merged into C when she logged in) and the
# app; and Bob. As the sinks write them: events (per source id) and event_persons (per person).
FUNNEL = [
    # message, channel, event, person resolved then, anonymous_id, user_id, device_id, minute
    ("f1", "web", "Product Viewed", "A", "ann-laptop", "", "", 0),
    ("f2", "web", "Product Viewed", "B", "ann-tablet", "", "", 1),
    ("f3", "web", "Product Added", "C", "ann-tablet", "cust-42", "", 2),
    ("f4", "web", "Order Completed", "C", "ann-tablet", "cust-42", "", 3),
    ("f5", "app", "Product Viewed", "C", "", "", "ann-phone", 10),
    ("f6", "web", "Product Viewed", "D", "bob", "", "", 20),
    ("f7", "web", "Product Added", "D", "bob", "", "", 21),
]
# channel, persons viewed, added, ordered, view -> order %: Ann counts once, with her order.
EXPECTED_FUNNEL = [
    # channel, viewed, added, ordered, view->order %, view->cart %, cart->order %
    ("app", 1, 0, 0, 0.0, 0.0, 0.0),
    ("web", 2, 2, 1, 50.0, 100.0, 50.0),
    ("any", 2, 2, 1, 50.0, 100.0, 50.0),
]


def _funnel_statements() -> list[str]:
    """INSERT ... SELECT statements (both clients send them as plain queries)."""
    out = []
    for message, channel, event, person, anonymous, user, device, minute in FUNNEL:
        ts = f"toDateTime({1_767_225_600 + 60 * minute})"
        out.append(
            "INSERT INTO events (message_id, type, channel, event, anonymous_id, user_id, device_id, "
            f"timestamp, received_at) SELECT '{message}', 'track', '{channel}', '{event}', '{anonymous}', "
            f"'{user}', '{device}', {ts}, {ts}"
        )
        out.append(
            "INSERT INTO event_persons (message_id, type, channel, event, person_id, anonymous_id, user_id, "
            f"timestamp, received_at, resolved_at) SELECT '{message}', 'track', '{channel}', '{event}', "
            f"'{person}', '{anonymous}', '{user}', {ts}, {ts}, {ts}"
        )
    for old in ("A", "B"):
        out.append(
            "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) "
            f"SELECT '{old}', 'C', 'merge-{old}', 1"
        )
    return out


def _rounded(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(str(row[0]), *(round(float(value), 2) for value in row[1:])) for row in rows]


def test_funnel_counts_persons_across_devices_and_merges_on_clickhouse_18(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    for statement in _funnel_statements():
        client.execute(statement)
    assert _rounded(kpi.run(client, "funnel_by_channel").rows) == _rounded(EXPECTED_FUNNEL)


def test_funnel_counts_persons_across_devices_and_merges_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "funnel_test")
    try:
        migrations.apply(backend, "funnel_test")
        for statement in _funnel_statements():
            backend.execute(statement)
        assert _rounded(backend.rows(kpi.sql("funnel_by_channel"))) == _rounded(EXPECTED_FUNNEL)
    finally:
        backend.close()


def _revenue_batch() -> IdentityBatch:
    """CALLS (orders stated by revenue, by total, by lines only, a checkout, a refund, a return) as the
    identity sink writes them."""
    batch = IdentityBatch()
    decoder = ResolvedDecoder()
    for number, (name, properties) in enumerate(CALLS):
        batch.add_resolved(decoder.decode(resolved_record(number, name, properties)), 0, number)
    return batch


def _python_revenue() -> tuple[float, float, float]:
    """(gross, returned, net) straight from the definition, from the properties the shop sent."""
    signed = [
        signed_revenue(
            name, event_value(props, [(p["quantity"], p["price"]) for p in props.get("products", [])])
        )
        for name, props in CALLS
    ]
    gross = sum(value for value in signed if value > 0)
    returned = -sum(value for value in signed if value < 0)
    return gross, returned, gross - returned


def _check_revenue(rows: list[tuple[Any, ...]]) -> None:
    gross, returned, net = _python_revenue()
    orders = sum(1 for name, _ in CALLS if name == "Order Completed")
    assert _rounded(rows) == [("web", orders, 2, round(gross, 2), round(returned, 2), round(net, 2))]
    assert net == 92.0  # 42 (revenue only) + 55 (total) + 40 (lines) + 30 (revenue over total) - 55 - 20


def test_revenue_kpi_equals_the_revenue_definition_on_clickhouse_18(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    writer = ClickHouseWriter(settings)
    try:
        for _ in range(2):  # delivered twice: still counted once
            for table, columns in _revenue_batch().tables():
                writer.insert(table, columns.names, columns.columns, len(columns))
    finally:
        writer.close()
    client = clickhouse_client(settings, settings.clickhouse_database)
    _check_revenue(kpi.run(client, "revenue_by_channel").rows)
    assert client.execute("SELECT sum(revenue) FROM events_by_person") == [(_python_revenue()[2],)]


def test_revenue_kpi_equals_the_revenue_definition_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "revenue_test")
    try:
        migrations.apply(backend, "revenue_test")
        for _ in range(2):
            for statement in json_inserts(_revenue_batch()):
                backend.execute(statement)
        _check_revenue(backend.rows(kpi.sql("revenue_by_channel")))
    finally:
        backend.close()


# The spring campaign reaches Ann and Bob; Ann opens it three times (once before her ESP id was merged
# into her person) and clicks once.
EMAIL = [
    # message, event, person resolved then
    ("s1", "Email Sent", "C"),
    ("s2", "Email Sent", "D"),
    ("o1", "Email Opened", "A"),
    ("o2", "Email Opened", "C"),
    ("o3", "Email Opened", "C"),
    ("c1", "Email Link Clicked", "C"),
]
# campaign, persons sent, opened, clicked, open %, click %, open events, click events
EXPECTED_EMAIL = [("spring", 2, 1, 1, 50.0, 50.0, 3, 1)]


def _email_statements() -> list[str]:
    out = []
    for minute, (message, event, person) in enumerate(EMAIL):
        ts = f"toDateTime({1_767_225_600 + 60 * minute})"
        out.append(
            "INSERT INTO events (message_id, type, channel, event, campaign_name, timestamp, received_at) "
            f"SELECT '{message}', 'track', 'email', '{event}', 'spring', {ts}, {ts}"
        )
        out.append(
            "INSERT INTO event_persons (message_id, type, channel, event, person_id, timestamp, received_at, "
            f"resolved_at) SELECT '{message}', 'track', 'email', '{event}', '{person}', {ts}, {ts}, {ts}"
        )
    out.append(
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) "
        "SELECT 'A', 'C', 'm', 1"
    )
    return out


def test_email_engagement_counts_persons_on_clickhouse_18(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    for statement in _email_statements():
        client.execute(statement)
    assert _rounded(kpi.run(client, "email_engagement").rows) == _rounded(EXPECTED_EMAIL)


def test_email_engagement_counts_persons_on_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "email_test")
    try:
        migrations.apply(backend, "email_test")
        for statement in _email_statements():
            backend.execute(statement)
        assert _rounded(backend.rows(kpi.sql("email_engagement"))) == _rounded(EXPECTED_EMAIL)
    finally:
        backend.close()
