"""The KPI library's queries give exact figures on hand-made data, on ClickHouse 18.16 and chDB:
use cases, use-case conversion by arm, funnel click-through, scroll rate, AOV and checkout value,
returns, repeat visits and purchases, lifetime value per segment and per person."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.dev.stack import clickhouse_client
from streams.domain.experiments.usecases import load_usecases
from streams.settings import Settings
from streams.warehouse import kpi, migrations, usecases
from streams.warehouse.sql_text import quote

pytestmark = pytest.mark.integration

DAY = 86_400
T0 = 1_772_323_200  # 2026-03-01 00:00 UTC
# (message id, channel, type, event, person, revenue, seconds after T0, properties)
EVENTS = [
    ("a-p1", "web", "page", "", "A", 0.0, 100, "{}"),
    ("a-p2", "web", "page", "", "A", 0.0, DAY + 100, "{}"),
    ("a-lv", "web", "track", "Product List Viewed", "A", 0.0, 200, '{"list_id":"L1"}'),
    ("a-ls", "web", "track", "Product List Scrolled", "A", 0.0, 210, '{"list_id":"L1","depth":80}'),
    ("a-pv", "web", "track", "Product Viewed", "A", 0.0, 220, "{}"),
    ("a-pa", "web", "track", "Product Added", "A", 0.0, 230, "{}"),
    ("a-cs", "web", "track", "Checkout Started", "A", 0.0, 240, '{"value":120}'),
    ("a-o1", "web", "track", "Order Completed", "A", 100.0, 300, "{}"),
    ("a-o2", "web", "track", "Order Completed", "A", 50.0, DAY + 300, "{}"),
    ("a2-o", "app", "track", "Order Completed", "A2", 30.0, 2 * DAY, "{}"),  # A2 was merged into A
    ("b-p1", "app", "screen", "", "B", 0.0, 100, "{}"),
    ("b-lv", "app", "track", "Product List Viewed", "B", 0.0, 200, '{"list_id":"L2"}'),
    ("b-ls", "app", "track", "Product List Scrolled", "B", 0.0, 210, '{"list_id":"L2","depth":30}'),
    ("b-pv", "app", "track", "Product Viewed", "B", 0.0, 220, "{}"),
    ("b-o1", "app", "track", "Order Completed", "B", 40.0, 300, "{}"),
    ("b-r1", "app", "track", "Product Returned", "B", -40.0, DAY, "{}"),
    ("c-o1", "store", "track", "Order Completed", "C", 200.0, 500, "{}"),
]
DEFINITION = {
    "id": "uc-one",
    "hypothesis": "A hypothesis long enough to be registered for the test.",
    "audience": "vip",
    "channels": ["email"],
    "primary_kpi": "conversion_rate",
    "minimum_detectable_effect": 0.1,
}


@dataclass
class Warehouse:
    rows: Callable[[str], list[tuple[Any, ...]]]
    execute: Callable[[str], Any]
    insert_rows: Callable[[str, list[tuple[Any, ...]]], Any] | None = None  # clickhouse-driver's block insert


def _literal(value: Any) -> str:
    return quote(value) if isinstance(value, str) else repr(value)


def _insert(warehouse: Warehouse, head: str, rows: list[tuple[Any, ...]]) -> None:
    if warehouse.insert_rows is not None:  # clickhouse-driver waits for a data block after VALUES
        warehouse.insert_rows(f"{head} VALUES", rows)
        return
    values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in rows)
    warehouse.execute(f"{head} VALUES {values}")


def _fill(warehouse: Warehouse) -> None:
    _insert(
        warehouse,
        "INSERT INTO events (message_id, channel, type, event, timestamp, properties)",
        [(m, ch, ty, ev, T0 + s, props) for m, ch, ty, ev, _, _, s, props in EVENTS],
    )
    _insert(
        warehouse,
        "INSERT INTO event_persons "
        "(message_id, channel, type, event, person_id, revenue, timestamp, timestamp_ms, resolved_at_ms)",
        [(m, ch, ty, ev, p, r, T0 + s, (T0 + s) * 1000, 1) for m, ch, ty, ev, p, r, s, _ in EVENTS],
    )
    _insert(
        warehouse,
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version)",
        [("A2", "A", "m1", 1)],
    )
    _insert(
        warehouse,
        "INSERT INTO segment_changes (change_id, person_id, segment_id, subject, change, seq, at, at_ms)",
        [(f"s-{p}", p, "vip", "", "entered", 1, T0, T0 * 1000) for p in ("A", "C")],
    )

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return warehouse.rows(sql)

    (one,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    (two,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION | {"id": "uc-two"}))])
    start = datetime.fromtimestamp(T0 - DAY, UTC)
    usecases.start(rows, warehouse.execute, one, now=start)
    usecases.start(rows, warehouse.execute, two, now=start)
    later = two.model_copy(update={"control_share": 0.2})
    usecases.start(rows, warehouse.execute, later, new_version=True, now=datetime.fromtimestamp(T0, UTC))
    usecases.stop(rows, warehouse.execute, "uc-two", now=datetime.fromtimestamp(T0 + DAY, UTC))
    # uc-one: A (treatment) and B (control) exposed before their orders, C (treatment) after its order;
    # A2's exposure (merged into A, same arm) does not make A count twice.
    _insert(
        warehouse,
        "INSERT INTO usecase_exposures (usecase_id, version, person_id, arm, at_ms, change_id)",
        [
            ("uc-one", 1, "A", "treatment", T0 * 1000, "e1"),
            ("uc-one", 1, "A2", "treatment", (T0 + 10) * 1000, "e2"),
            ("uc-one", 1, "B", "control", T0 * 1000, "e3"),
            ("uc-one", 1, "C", "treatment", (T0 + 600) * 1000, "e4"),
        ],
    )


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "chdb":
        backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "kpi_library")
        try:
            migrations.apply(backend, "kpi_library")
            found = Warehouse(backend.rows, backend.execute)
            _fill(found)
            yield found
        finally:
            backend.close()
        return
    settings: Settings = request.getfixturevalue("settings_factory")()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        found = Warehouse(
            lambda sql: [tuple(row) for row in client.execute(sql)], client.execute, client.execute
        )
        _fill(found)
        yield found
    finally:
        client.disconnect()


def _table(warehouse: Warehouse, name: str) -> dict[str, tuple[str, ...]]:
    """The KPI's rows by their first column, every value as text (chDB gives text)."""
    return {str(row[0]): tuple(str(v) for v in row[1:]) for row in warehouse.rows(kpi.sql(name))}


def _floats(values: tuple[str, ...]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def test_usecases_and_their_conversion_by_arm(warehouse: Warehouse) -> None:
    assert _floats(next(iter(_table(warehouse, "usecases_count").items()))[1]) == (1, 1, 3)
    rows = {
        (str(r[0]), int(r[1]), str(r[2])): tuple(float(v) for v in r[3:])
        for r in warehouse.rows(kpi.sql("usecase_conversion"))
    }
    assert rows == {("uc-one", 1, "control"): (1, 1, 100.0), ("uc-one", 1, "treatment"): (2, 1, 50.0)}


def test_shop_kpis(warehouse: Warehouse) -> None:
    returns = _table(warehouse, "returns_by_channel")
    assert _floats(returns["app"]) == (2, 1, 50.0, 70.0, 40.0, 57.1)
    assert _floats(returns["any"]) == (5, 1, 20.0, 420.0, 40.0, 9.5)
    aov = _table(warehouse, "aov_by_channel")
    assert _floats(aov["web"]) == (2, 150.0, 75.0, 1, 120.0)
    assert _floats(aov["any"]) == (5, 420.0, 84.0, 1, 120.0)
    assert _floats(aov["app"]) == (2, 70.0, 35.0, 0, 0.0)
    repeat = _table(warehouse, "repeat_visits_purchases")
    assert _floats(repeat["web"]) == (1, 1, 100.0, 1, 1, 100.0)
    assert _floats(repeat["any"]) == (2, 1, 50.0, 3, 1, 33.3)
    funnel = _table(warehouse, "funnel_by_channel")
    assert _floats(funnel["web"]) == (1, 1, 1, 100.0, 100.0, 100.0)
    assert _floats(funnel["app"])[:2] == (1, 0) and _floats(funnel["app"])[4] == 0.0
    scroll = {
        (str(r[0]), str(r[1])): tuple(float(v) for v in r[2:]) for r in warehouse.rows(kpi.sql("scroll_rate"))
    }
    assert scroll == {("2026-03-01", "app"): (1, 0, 0.0), ("2026-03-01", "web"): (1, 1, 100.0)}


def test_lifetime_value(warehouse: Warehouse) -> None:
    clv = _table(warehouse, "clv_by_segment")
    assert _floats(clv["vip"]) == (2, 2, 380.0, 190.0)
    assert _floats(clv["(all persons)"]) == (3, 2, 380.0, 126.67)
    top = [(str(r[0]), float(r[1]), int(r[2]), int(r[3])) for r in warehouse.rows(kpi.sql("clv_top_persons"))]
    assert top == [("C", 200.0, 1, 0), ("A", 180.0, 3, 0), ("B", 0.0, 1, 1)]
