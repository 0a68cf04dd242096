"""Use cases in ClickHouse, on 18.16 and chDB: the registry refuses an edit of a running use case, and
the per-arm sums equal a plain Python computation over the same persons, merges and events."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.dev.stack import clickhouse_client
from streams.domain.experiments.assignment import arm as assign
from streams.domain.experiments.model import Arm
from streams.domain.experiments.usecases import UseCase, load_usecases
from streams.settings import Settings
from streams.warehouse import migrations, usecase_outcomes, usecases
from streams.warehouse.sql_text import quote

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
DEFINITION = """
id: shoes-reminder
hypothesis: A browse reminder raises the share of shoe browsers who buy within 14 days.
audience: browsed-shoes-not-bought
channels: [email]
primary_kpi: conversion_rate
guardrail_kpis: [aov]
attribution_window_days: 14
control_share: 0.3
minimum_detectable_effect: 0.1
"""


def usecase(**changes: Any) -> UseCase:
    (found,) = load_usecases([("uc.yaml", yaml.safe_dump(yaml.safe_load(DEFINITION) | changes))])
    return found


@dataclass
class Warehouse:
    rows: Callable[[str], list[tuple[Any, ...]]]
    execute: Callable[[str], Any]
    insert: Callable[[str, list[tuple[Any, ...]]], Any]  # "INSERT INTO t (columns) VALUES", rows


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    if request.param == "chdb":
        backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "usecases")
        try:
            migrations.apply(backend, "usecases")
            yield Warehouse(
                backend.rows, backend.execute, lambda sql, rows: backend.execute(sql + _values(rows))
            )
        finally:
            backend.close()
        return
    settings: Settings = request.getfixturevalue("settings_factory")()
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield Warehouse(
            lambda sql: [tuple(row) for row in client.execute(sql)], client.execute, client.execute
        )
    finally:
        client.disconnect()


def test_a_running_use_case_refuses_an_edit_and_a_new_version_starts_a_new_period(
    warehouse: Warehouse,
) -> None:
    at = datetime(2026, 1, 1, 9, tzinfo=UTC)
    first = usecases.start(warehouse.rows, warehouse.execute, usecase(), now=at)
    assert first.started and first.registration.version == 1
    again = usecases.start(warehouse.rows, warehouse.execute, usecase(name="renamed", channels=["ads"]))
    assert not again.started and again.registration.version == 1

    for change in ({"control_share": 0.2}, {"primary_kpi": "aov", "guardrail_kpis": []}):
        with pytest.raises(usecases.RegistrationError, match="registered fields cannot change") as refused:
            usecases.start(warehouse.rows, warehouse.execute, usecase(**change))
        assert "--new-version" in str(refused.value)
    assert [r.version for r in usecases.registrations(warehouse.rows, "shoes-reminder")] == [1]
    assert usecases.latest(warehouse.rows, "shoes-reminder") == first.registration

    later = datetime(2026, 1, 20, tzinfo=UTC)
    second = usecases.start(
        warehouse.rows, warehouse.execute, usecase(control_share=0.2), new_version=True, now=later
    )
    assert second.started and second.registration.version == 2
    assert second.stopped is not None and second.stopped.stopped_at == later
    versions = usecases.registrations(warehouse.rows, "shoes-reminder")
    assert [(r.version, r.running) for r in versions] == [(1, False), (2, True)]
    assert versions[0].usecase().control_share == 0.3 and versions[1].usecase().control_share == 0.2

    usecases.stop(warehouse.rows, warehouse.execute, "shoes-reminder", now=later)
    with pytest.raises(usecases.RegistrationError, match="already stopped"):
        usecases.stop(warehouse.rows, warehouse.execute, "shoes-reminder")
    with pytest.raises(usecases.RegistrationError, match="never started"):
        usecases.stop(warehouse.rows, warehouse.execute, "nobody")


def _values(rows: list[tuple[Any, ...]]) -> str:
    def literal(value: Any) -> str:
        return quote(value) if isinstance(value, str) else repr(value)

    return ", ".join("(" + ", ".join(literal(v) for v in row) + ")" for row in rows)


def test_the_arms_sums_equal_a_direct_computation(warehouse: Warehouse) -> None:
    rng = random.Random(7)
    persons = [f"p{i}" for i in range(300)]
    # p0..p19 were merged: p0..p9 into p100.. (survivors of the same arm or not), p10..p19 away twice.
    canonical = {p: p for p in persons}
    aliases = []
    for i in range(10):
        canonical[f"p{i}"] = f"p{100 + i}"
        aliases.append((f"p{i}", f"p{100 + i}", f"m{i}", T0))
    exposures = []
    for p in persons[:250]:
        at = T0 + rng.randrange(0, 20 * DAY)
        exposures.append(("shoes-reminder", 1, p, assign("shoes-reminder", p, 0.3).value, at, f"c-{p}"))
        if rng.random() < 0.2:  # entered again later: the first entry counts
            exposures.append(
                ("shoes-reminder", 1, p, assign("shoes-reminder", p, 0.3).value, at + DAY, f"d-{p}")
            )
    events = []
    for n in range(3000):
        p = rng.choice(persons)
        kind = rng.choice(
            ["Order Completed", "Order Completed", "Product Returned", "Page", "Product Viewed"]
        )
        revenue = {"Order Completed": round(rng.uniform(5, 200), 2), "Product Returned": -20.0}.get(kind, 0.0)
        typ = "page" if kind == "Page" else "track"
        ts = T0 + rng.randrange(-5 * DAY, 40 * DAY)
        events.append((f"e{n}", "web", typ, kind if typ == "track" else "", p, revenue, ts))

    # The reference: per canonical person, first exposure and arms; outcomes in (first, first + 14 d].
    first: dict[str, int] = {}
    arms: dict[str, set[str]] = {}
    for _, _, p, a, at, _ in exposures:
        c = canonical[p]
        first[c] = min(first.get(c, at), at)
        arms.setdefault(c, set()).add(a)
    clean = {c for c in first if len(arms[c]) == 1}
    expected: dict[str, dict[str, float]] = {}
    for c in clean:
        window = [e for e in events if canonical[e[4]] == c and first[c] < e[6] <= first[c] + 14 * DAY]
        orders = [e for e in window if e[3] == "Order Completed"]
        sums = expected.setdefault(
            next(iter(arms[c])),
            dict.fromkeys(
                ["persons", "converted", "revenue", "orders", "order_revenue", "returners", "visitors"], 0.0
            ),
        )
        sums["persons"] += 1
        sums["converted"] += bool(orders)
        sums["revenue"] += sum(e[5] for e in window)
        sums["orders"] += len(orders)
        sums["order_revenue"] += sum(e[5] for e in orders)
        sums["returners"] += any(e[3] == "Product Returned" for e in window)
        sums["visitors"] += any(e[2] == "page" for e in window)

    warehouse.insert(
        "INSERT INTO usecase_exposures (usecase_id, version, person_id, arm, at_ms, change_id) VALUES ",
        exposures,
    )
    warehouse.insert(
        "INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version) VALUES ", aliases
    )
    warehouse.insert(
        "INSERT INTO event_persons "
        "(message_id, channel, type, event, person_id, revenue, timestamp_ms) VALUES ",
        events,
    )
    days = usecase_outcomes.exposure_stats(warehouse.rows, "shoes-reminder", 1, 14, T0, T0 + 30 * DAY)
    got: dict[str, dict[str, float]] = {}
    for d in days:
        sums = got.setdefault(d.arm.value, dict.fromkeys(expected[d.arm.value], 0.0))
        for name in sums:
            sums[name] += getattr(d, name)
    for arm_name, sums in expected.items():
        assert got[arm_name] == pytest.approx(sums), arm_name
    assert {d.arm for d in days} == {Arm.CONTROL, Arm.TREATMENT}
    contaminated = len(first) - len(clean)
    assert usecase_outcomes.contaminated(warehouse.rows, "shoes-reminder", 1) == contaminated
    # The same persons, for analysts: the view names each survivor with the ids it was exposed as.
    listed = warehouse.rows(
        "SELECT survivor_id, length(arms), length(exposed_as) FROM usecase_contamination "
        "WHERE usecase_id = 'shoes-reminder' AND version = 1 ORDER BY survivor_id"
    )
    assert sorted(str(row[0]) for row in listed) == sorted(c for c in first if c not in clean)
    assert all(int(row[1]) == 2 and int(row[2]) >= 2 for row in listed)
