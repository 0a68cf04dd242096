"""The KPI library's queries give exact figures on hand-made data, on ClickHouse 18.16 and chDB:
use cases, use-case conversion by arm (also against a direct Python computation and the report's
engine), funnel click-through, scroll rate, AOV and checkout value, returns, repeat visits and
purchases, lifetime value per segment and per person.

One database per backend for the whole module: the data is written once and every test only reads.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from streams.dev.stack import apply_migrations, clickhouse_client
from streams.domain.experiments.model import Arm
from streams.domain.experiments.outcomes import total
from streams.domain.experiments.usecases import load_usecases
from streams.warehouse import kpi, migrations, usecase_outcomes, usecases
from streams.warehouse.sql_text import quote

pytestmark = pytest.mark.integration

DAY = 86_400
DAY_MS = DAY * 1000
T0 = 1_772_323_200  # 2026-03-01 00:00 UTC

# (message id, channel, type, event, person ('' = not resolved: in events only), revenue, seconds after
# T0, properties). Revenue is what the identity sink writes (the one revenue definition).
EVENTS = [
    # Ann (A): two visit days, a list viewed and scrolled, the funnel, a checkout, two web orders, and
    # an app order placed as A2 (merged into A since).
    ("a-p1", "web", "page", "", "A", 0.0, 100, "{}"),
    ("a-p2", "web", "page", "", "A", 0.0, DAY + 100, "{}"),
    ("a-lv", "web", "track", "Product List Viewed", "A", 0.0, 200, '{"list_id":"L1","category":"Shoes"}'),
    ("a-ls", "web", "track", "Product List Scrolled", "A", 0.0, 210, '{"list_id":"L1","depth":80}'),
    ("a-pv", "web", "track", "Product Viewed", "A", 0.0, 220, "{}"),
    ("a-pa", "web", "track", "Product Added", "A", 0.0, 230, "{}"),
    ("a-cs", "web", "track", "Checkout Started", "A", 0.0, 240, '{"value":120,"revenue":100}'),
    ("a-o1", "web", "track", "Order Completed", "A", 100.0, 300, "{}"),
    ("a-o2", "web", "track", "Order Completed", "A", 50.0, DAY + 300, "{}"),
    ("a2-o", "app", "track", "Order Completed", "A2", 30.0, 2 * DAY, "{}"),
    # Bob (B): one app visit, a list scrolled too little, an order he returned.
    ("b-p1", "app", "screen", "", "B", 0.0, 100, "{}"),
    ("b-lv", "app", "track", "Product List Viewed", "B", 0.0, 200, '{"list_id":"L2"}'),
    ("b-ls", "app", "track", "Product List Scrolled", "B", 0.0, 210, '{"list_id":"L2","depth":30}'),
    ("b-pv", "app", "track", "Product Viewed", "B", 0.0, 220, "{}"),
    ("b-cs", "app", "track", "Checkout Started", "B", 0.0, 250, '{"revenue":35.5}'),
    ("b-o1", "app", "track", "Order Completed", "B", 40.0, 300, "{}"),
    ("b-r1", "app", "track", "Product Returned", "B", -40.0, DAY, "{}"),
    # Carl (C): one store order. D: a checkout without a value. An unresolved checkout.
    ("c-o1", "store", "track", "Order Completed", "C", 200.0, 500, "{}"),
    ("d-cs", "web", "track", "Checkout Started", "D", 0.0, 260, "{}"),
    ("x-cs", "web", "track", "Checkout Started", "", 0.0, 270, '{"value":80}'),
    # Scrolls: M viewed as M1 and scrolled as M2 (M1 merged into M2) to exactly 50 %; N scrolled another
    # list, and the viewed one only the next day; P's list id is a number.
    ("m-lv", "web", "track", "Product List Viewed", "M1", 0.0, 300, '{"list_id":"L3"}'),
    ("m-ls", "web", "track", "Product List Scrolled", "M2", 0.0, 310, '{"list_id":"L3","depth":50}'),
    ("n-lv", "web", "track", "Product List Viewed", "N", 0.0, 400, '{"list_id":"L4"}'),
    ("n-ls", "web", "track", "Product List Scrolled", "N", 0.0, 410, '{"list_id":"L5","depth":90}'),
    ("n-l2", "web", "track", "Product List Scrolled", "N", 0.0, DAY + 10, '{"list_id":"L4","depth":95}'),
    ("p-lv", "web", "track", "Product List Viewed", "P", 0.0, DAY + 500, '{"list_id":17}'),
    ("p-ls", "web", "track", "Product List Scrolled", "P", 0.0, DAY + 510, '{"list_id":17,"depth":100}'),
    # Orders of the use cases' persons (USECASE_ORDERS), in the store, 12.0 each.
]
ALIASES = [("A2", "A"), ("M1", "M2"), ("E2", "E")]  # merged id -> survivor
SEGMENT_CHANGES = [
    # person, segment, subject, change, seq
    ("A", "vip", "", "entered", 1),
    ("C", "vip", "", "entered", 1),
    ("A", "bought-shoes", "product:1", "entered", 1),  # a suppression audience: one membership per product
    ("A", "bought-shoes", "product:2", "entered", 1),
    ("B", "lapsed", "", "entered", 1),
    ("B", "lapsed", "", "exited", 2),
]

# Use cases: (id, version) -> (attribution window in days, started, stopped or None), as registered.
REGISTERED: dict[tuple[str, int], tuple[int, int, int | None]] = {
    ("uc-one", 1): (14, T0 - DAY, None),
    ("uc-two", 1): (14, T0 - DAY, T0),  # stopped by version 2's start
    ("uc-two", 2): (2, T0, T0 + DAY),
    ("uc-old", 1): (3, T0 - DAY, None),  # written before compact JSON: '"attribution_window_days": 3'
}
# (use case, version, person, arm, seconds after T0 of the exposure)
EXPOSURES = [
    ("uc-one", 1, "A", "treatment", 0),  # converts (orders after)
    ("uc-one", 1, "A2", "treatment", 10),  # merged into A: A counts once, from T0
    ("uc-one", 1, "B", "control", 0),  # converts
    ("uc-one", 1, "C", "treatment", 600),  # ordered before the exposure only
    ("uc-one", 1, "E", "treatment", 0),  # E and E2 (merged into E) in both arms: left out
    ("uc-one", 1, "E2", "control", 20),
    ("uc-one", 1, "F", "treatment", 1000),  # ordered in the same millisecond: not after
    ("uc-one", 1, "G", "control", 0),  # ordered exactly 14 days later: in the window
    ("uc-one", 1, "H", "control", 0),  # ordered 14 days and 1 s later: out of it
    ("uc-one", 1, "I", "treatment", -2 * DAY),  # before the use case started: not in its run
    ("uc-two", 1, "Q", "treatment", -DAY + 100),  # converts within 14 days
    ("uc-two", 2, "J", "treatment", 1000),  # converts within version 2's 2 days
    ("uc-two", 2, "K", "control", 2000),  # ordered 3 days later: out of version 2's window
    ("uc-two", 2, "L", "treatment", 2 * DAY),  # after version 2 stopped: not in its run
    ("uc-old", 1, "R", "treatment", 0),  # ordered 2 days later: in its 3 days
]
# (person, seconds after T0): each an Order Completed in the store worth 12.0
USECASE_ORDERS = [
    ("E", 1000),
    ("F", 1000),
    ("G", 14 * DAY),
    ("H", 14 * DAY + 1),
    ("I", 0),
    ("J", 1000 + DAY + DAY // 2),
    ("K", 2000 + 3 * DAY),
    ("Q", 5 * DAY),
    ("R", 2 * DAY),
]
ALL_EVENTS = EVENTS + [
    (f"{person.lower()}-o", "store", "track", "Order Completed", person, 12.0, seconds, "{}")
    for person, seconds in USECASE_ORDERS
]

# (use case, version, arm) -> (persons, converted, conversion %), worked out by hand.
EXPECTED_CONVERSION = {
    ("uc-old", 1, "treatment"): (1, 1, 100.0),
    ("uc-one", 1, "control"): (3, 2, 66.67),  # B, G; not H
    ("uc-one", 1, "treatment"): (3, 1, 33.33),  # A; not C, F
    ("uc-two", 1, "treatment"): (1, 1, 100.0),
    ("uc-two", 2, "control"): (1, 0, 0.0),
    ("uc-two", 2, "treatment"): (1, 1, 100.0),
}


def python_conversion() -> dict[tuple[str, int, str], tuple[int, int, float]]:
    """The conversion KPI computed straight from the test's data, as docs/kpis.md defines it."""
    survivor = dict(ALIASES)
    orders: dict[str, list[int]] = {}
    for _, _, _, event, person, _, seconds, _ in ALL_EVENTS:
        if event == "Order Completed":
            orders.setdefault(survivor.get(person, person), []).append((T0 + seconds) * 1000)
    exposed: dict[tuple[str, int, str], tuple[set[str], int]] = {}
    for usecase_id, version, person, arm, seconds in EXPOSURES:
        _, started, stopped = REGISTERED[(usecase_id, version)]
        at_ms = (T0 + seconds) * 1000
        if at_ms < started * 1000 or (stopped is not None and at_ms > stopped * 1000):
            continue
        key = (usecase_id, version, survivor.get(person, person))
        arms, first = exposed.get(key, (set(), at_ms))
        exposed[key] = (arms | {arm}, min(first, at_ms))
    counts: dict[tuple[str, int, str], list[int]] = {}
    for (usecase_id, version, person), (arms, first) in exposed.items():
        if len(arms) != 1:
            continue
        window_ms = REGISTERED[(usecase_id, version)][0] * DAY_MS
        converted = any(first < at <= first + window_ms for at in orders.get(person, []))
        count = counts.setdefault((usecase_id, version, arms.pop()), [0, 0])
        count[0] += 1
        count[1] += int(converted)
    return {key: (n, c, round(100 * c / n, 2)) for key, (n, c) in counts.items()}


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


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _register(warehouse: Warehouse) -> None:
    """The use cases as `omniseg usecases start / stop` registers them, and one row as written before
    registrations were compact JSON."""
    (one,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    (two,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION | {"id": "uc-two"}))])
    usecases.start(warehouse.rows, warehouse.execute, one, now=_at(-DAY))
    usecases.start(warehouse.rows, warehouse.execute, two, now=_at(-DAY))
    later = two.model_copy(update={"attribution_window_days": 2, "control_share": 0.2})
    usecases.start(warehouse.rows, warehouse.execute, later, new_version=True, now=_at(0))
    usecases.stop(warehouse.rows, warehouse.execute, "uc-two", now=_at(DAY))
    (old,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION | {"id": "uc-old"}))])
    registration = old.registration() | {"attribution_window_days": 3}
    warehouse.execute(
        "INSERT INTO usecase_registrations (usecase_id, version, checksum, registration, definition, "
        f"started_at, stopped_at, stopped, revision) SELECT 'uc-old', 1, 'old', "
        f"{quote(json.dumps(registration, sort_keys=True))}, {quote(old.model_dump_json())}, "
        f"toDateTime({T0 - DAY}), toDateTime(0), 0, 1"
    )


def _fill(warehouse: Warehouse) -> None:
    _insert(
        warehouse,
        "INSERT INTO events (message_id, channel, type, event, timestamp, timestamp_ms, properties)",
        [(m, ch, ty, ev, T0 + s, (T0 + s) * 1000, props) for m, ch, ty, ev, _, _, s, props in ALL_EVENTS],
    )
    _insert(
        warehouse,
        "INSERT INTO event_persons "
        "(message_id, channel, type, event, person_id, revenue, timestamp, timestamp_ms, resolved_at_ms)",
        [(m, ch, ty, ev, p, r, T0 + s, (T0 + s) * 1000, 1) for m, ch, ty, ev, p, r, s, _ in ALL_EVENTS if p],
    )
    _insert(
        warehouse,
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version)",
        [(old, new, f"merge-{old}", 1) for old, new in ALIASES],
    )
    _insert(
        warehouse,
        "INSERT INTO segment_changes (change_id, person_id, segment_id, subject, change, seq, at, at_ms)",
        [
            (f"s{i}", person, segment, subject, change, seq, T0 + seq, (T0 + seq) * 1000)
            for i, (person, segment, subject, change, seq) in enumerate(SEGMENT_CHANGES)
        ],
    )
    _register(warehouse)
    _insert(
        warehouse,
        "INSERT INTO usecase_exposures (usecase_id, version, person_id, arm, at, at_ms, change_id)",
        [
            (usecase_id, version, person, arm, T0 + seconds, (T0 + seconds) * 1000, f"x{i}")
            for i, (usecase_id, version, person, arm, seconds) in enumerate(EXPOSURES)
        ],
    )


@pytest.fixture(scope="module", params=["clickhouse-18.16", "chdb"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Warehouse]:
    if request.param == "chdb":
        backend = migrations.ChdbBackend(str(tmp_path_factory.mktemp("chdb")), "kpi_library")
        try:
            migrations.apply(backend, "kpi_library")
            found = Warehouse(backend.rows, backend.execute)
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
            lambda sql: [tuple(row) for row in client.execute(sql)], client.execute, client.execute
        )
        _fill(found)
        yield found
    finally:
        client.disconnect()


def _text(value: Any) -> str:
    """A cell as text, the same on both backends (chDB gives text, NULL as \\N)."""
    return "NULL" if value is None or value == "\\N" else str(value)


def _table(warehouse: Warehouse, name: str, keys: int = 1) -> dict[Any, tuple[Any, ...]]:
    """The KPI's rows by their first ``keys`` columns; the other cells as floats (NULL stays None)."""
    table: dict[Any, tuple[Any, ...]] = {}
    for row in warehouse.rows(kpi.sql(name)):
        key = tuple(_text(v) for v in row[:keys])
        values = tuple(None if _text(v) == "NULL" else float(v) for v in row[keys:])
        table[key[0] if keys == 1 else key] = values
    return table


def test_usecases_count(warehouse: Warehouse) -> None:
    # uc-one and uc-old run, uc-two's version 2 was stopped; four versions in all.
    assert _table(warehouse, "usecases_count", keys=0) == {(): (3, 2, 1, 4)}


def test_usecase_conversion_by_arm(warehouse: Warehouse) -> None:
    found = {
        (usecase_id, int(version), arm): values
        for (usecase_id, version, arm), values in _table(warehouse, "usecase_conversion", keys=3).items()
    }
    assert python_conversion() == EXPECTED_CONVERSION
    assert found == EXPECTED_CONVERSION
    # The figures `omniseg usecases report` computes (streams/warehouse/usecase_outcomes.py), per arm.
    for (usecase_id, version), (window_days, started, stopped) in REGISTERED.items():
        end_ms = (stopped * 1000 + 1) if stopped is not None else (T0 + 30 * DAY) * 1000
        days = usecase_outcomes.exposure_stats(
            warehouse.rows, usecase_id, version, window_days, started * 1000, end_ms
        )
        for arm in Arm:
            sums = total(arm, days)
            if sums.persons:
                assert found[(usecase_id, version, arm.value)][:2] == (sums.persons, sums.converted)


def test_funnel_click_through(warehouse: Warehouse) -> None:
    # viewed, added, ordered, view->order %, view->cart %, cart->order %
    assert _table(warehouse, "funnel_by_channel") == {
        "app": (1, 0, 0, 0.0, 0.0, 0.0),  # Bob viewed and ordered without adding (and A2's order alone)
        "web": (1, 1, 1, 100.0, 100.0, 100.0),
        "any": (2, 1, 1, 50.0, 50.0, 100.0),
    }


def test_scroll_rate(warehouse: Warehouse) -> None:
    # viewers, scrollers, scroll %
    assert _table(warehouse, "scroll_rate", keys=2) == {
        ("2026-03-01", "app"): (1, 0, 0.0),  # Bob scrolled 30 %
        ("2026-03-01", "web"): (3, 2, 66.7),  # Ann and M (merged) did; N scrolled another list
        ("2026-03-02", "web"): (1, 1, 100.0),  # P (a numeric list id); N scrolled without a view
    }


def test_aov_and_checkout_value(warehouse: Warehouse) -> None:
    # orders, order value, AOV, checkouts, checkouts with a value, their mean value
    assert _table(warehouse, "aov_by_channel") == {
        "app": (2, 70.0, 35.0, 1, 1, 35.5),  # Bob's checkout states revenue only
        "store": (10, 308.0, 30.8, 0, 0, None),
        "web": (2, 150.0, 75.0, 3, 2, 100.0),  # value before revenue; D's checkout has neither
        "any": (14, 528.0, 37.71, 4, 3, 78.5),
    }


def test_returns(warehouse: Warehouse) -> None:
    # orders, returns, return rate %, order value, returned value, returned value %
    assert _table(warehouse, "returns_by_channel") == {
        "app": (2, 1, 50.0, 70.0, 40.0, 57.1),
        "store": (10, 0, 0.0, 308.0, 0.0, 0.0),
        "web": (2, 0, 0.0, 150.0, 0.0, 0.0),
        "any": (14, 1, 7.1, 528.0, 40.0, 7.6),
    }


def test_repeat_visits_and_purchases(warehouse: Warehouse) -> None:
    # visitors, repeat visitors, %, buyers, repeat buyers, %
    assert _table(warehouse, "repeat_visits_purchases") == {
        "app": (1, 0, 0.0, 2, 0, 0.0),  # A2's app order is Ann's, but her only one in the app
        "store": (0, 0, 0.0, 10, 0, 0.0),
        "web": (1, 1, 100.0, 1, 1, 100.0),
        "any": (2, 1, 50.0, 12, 1, 8.3),  # Ann: three orders on two channels
    }


def test_lifetime_value(warehouse: Warehouse) -> None:
    # members, buyers, total, average per member, average per buyer
    assert _table(warehouse, "clv_by_segment") == {
        "bought-shoes": (1, 1, 180.0, 180.0, 180.0),  # Ann once, for her two products
        "vip": (2, 2, 380.0, 190.0, 190.0),  # Ann 180 (A2's order included), Carl 200
        "(all persons)": (16, 12, 488.0, 30.5, 40.67),  # Bob is a buyer with 0 after his return
    }
    top = [
        (person, float(clv), int(orders), int(returns), str(first), str(last))
        for person, clv, orders, returns, first, last in warehouse.rows(kpi.sql("clv_top_persons"))
    ]
    assert top[:2] == [
        ("C", 200.0, 1, 0, "2026-03-01 00:08:20", "2026-03-01 00:08:20"),
        ("A", 180.0, 3, 0, "2026-03-01 00:05:00", "2026-03-03 00:00:00"),
    ]
    assert [row[0] for row in top[2:]] == ["E", "F", "G", "H", "I", "J", "K", "Q", "R", "B"]
    assert top[-1][1:4] == (0.0, 1, 1)
