"""What a retention run decides, without a server: TTL or delete by version, the boundary that never moves
back, the grace the TTL keeps on the folded tables, waiting on mutations, and the worker's schedule."""

from __future__ import annotations

import asyncio
import threading
from datetime import date, timedelta
from typing import Any

import pytest

from streams.settings import Settings
from streams.warehouse import retention
from streams.warehouse.retention import RAW_TABLES, Plan, Server, TableState

TODAY = date(2026, 12, 4)


def _plan(days: int, boundary: date, version: str = "18.16.1", older: int = 0, ttl: str = "") -> Plan:
    states = tuple(
        TableState(table, 10, TODAY, older, "2026-01-01", ttl, retention.wanted_ttl(table, days))
        for table in RAW_TABLES
    )
    return Plan(days, Server(version), TODAY, boundary, states)


@pytest.mark.parametrize(
    ("version", "ttl"), [("18.16.1", False), ("20.3.8.53", False), ("21.1.2", True), ("26.9.1.1", True)]
)
def test_current_clickhouse_uses_a_ttl_and_18_16_a_delete(version: str, ttl: bool) -> None:
    assert Server(version).uses_ttl is ttl


def test_first_run_folds_everything_before_the_cutoff() -> None:
    plan = _plan(30, date(1970, 1, 1), older=5)
    assert plan.cutoff == TODAY - timedelta(days=30)
    assert plan.new_boundary == plan.cutoff and plan.changes_anything
    assert plan.rows_to_delete == 15 and plan.fold_lag_days == 0


def test_boundary_never_moves_back_when_the_retention_grows() -> None:
    earlier = TODAY - timedelta(days=10)  # a shorter retention folded up to here before
    plan = _plan(90, earlier)
    assert plan.new_boundary == earlier and not plan.changes_anything


def test_a_late_fold_is_reported() -> None:
    plan = _plan(30, TODAY - timedelta(days=33))
    assert plan.fold_lag_days == 3 and plan.changes_anything


def test_retention_off_deletes_nothing_and_folds_nothing() -> None:
    plan = _plan(0, date(1970, 1, 1), older=7)
    assert not plan.enabled and plan.rows_to_delete == 0 and not plan.changes_anything


def test_folded_tables_keep_the_grace_days_in_their_ttl() -> None:
    events, _, invalid = RAW_TABLES
    assert retention.wanted_ttl(events, 30) == f"timestamp + toIntervalDay({30 + retention.TTL_GRACE_DAYS})"
    assert retention.wanted_ttl(invalid, 30) == "received_at + toIntervalDay(30)"
    assert retention.wanted_ttl(events, 0) == ""


def test_ttl_already_set_is_left_alone_and_turning_off_removes_it() -> None:
    current = f"timestamp  +  toIntervalDay({30 + retention.TTL_GRACE_DAYS})"
    plan = _plan(30, TODAY - timedelta(days=30), version="26.9.1.1", ttl=current)
    assert [state.table.name for state in plan.ttl_changes] == [
        "invalid_events"
    ]  # received_at, not timestamp
    off = _plan(0, TODAY - timedelta(days=30), version="26.9.1.1", ttl=current)
    assert len(off.ttl_changes) == 3 and off.changes_anything
    assert not _plan(0, TODAY, version="18.16.1", ttl="").ttl_changes


def test_wait_reports_what_is_left_until_the_mutations_are_done() -> None:
    answers: list[list[tuple[Any, ...]]] = [
        [("events", "mutation_1.txt", 3)],
        [("events", "mutation_1.txt", 3)],
        [("events", "mutation_1.txt", 1)],
        [],
    ]
    said: list[str] = []
    assert retention.wait(lambda _sql: answers.pop(0), said.append, sleep=lambda _s: None)
    assert said == [
        "waiting: events mutation_1.txt 3 parts to do",
        "waiting: events mutation_1.txt 1 parts to do",
    ]


def test_wait_gives_up_at_the_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    running = [("event_persons", "mutation_2.txt", 4)]
    assert not retention.wait(lambda _sql: running, timeout_s=5, poll_s=1, clock=lambda: now[0], sleep=sleep)


def test_worker_schedule_runs_again_after_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams import app

    calls: list[int] = []
    second = threading.Event()

    def fake_run(settings: Settings, progress: Any) -> None:
        calls.append(settings.events_retention_days)
        if len(calls) == 1:
            raise ConnectionError("ClickHouse is down")
        second.set()

    monkeypatch.setattr(retention, "run_scheduled", fake_run)
    monkeypatch.setattr(app, "RETENTION_RETRY_S", 0.01)
    settings = Settings(events_retention_days=30, events_retention_interval_h=1.0)

    async def scenario() -> None:
        service = app._retention_service(settings, first_run_s=0.0)()
        await service.start()
        try:
            async with asyncio.timeout(10):
                while not second.is_set():
                    await asyncio.sleep(0.01)
        finally:
            await service.stop()

    asyncio.run(scenario())
    assert calls == [30, 30]
