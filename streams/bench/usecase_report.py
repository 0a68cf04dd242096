"""``omniseg bench usecase-report``: how long a use-case report takes over a million exposures and ten
million events.

Against a running stack (``omniseg dev up``), in its own ClickHouse database (dropped afterwards unless
``keep``):

1. Register a use case (30-day-old start, 14-day window, 10 % control) and fill, inside ClickHouse from
   ``numbers()``: ``exposures`` persons exposed over 14 days (one in ten in control, as the assignment
   would give), ``events`` events of ``exposures * 1.5`` persons (a third never exposed) spread over the
   30 days (orders, returns, page views and product views, with revenue), and merges of 1 % of the
   exposed persons into persons of the other arm (so the canonical mapping and the contamination
   check have work).
2. Run the report as ``omniseg usecases report`` does (the per-arm query, the contamination query and
   the statistics) ``rounds`` times, and report each time.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from streams.bench.measure import Report
from streams.dev.stack import apply_migrations, clickhouse_client
from streams.domain.experiments.usecases import load_usecases
from streams.settings import Settings
from streams.warehouse import usecase_outcomes, usecases

DAY_MS = 86_400_000
_USECASE = {
    "id": "bench-usecase",
    "hypothesis": "A benchmark use case: the report must answer in seconds at retail scale.",
    "audience": "bench-audience",
    "channels": ["email"],
    "primary_kpi": "conversion_rate",
    "guardrail_kpis": ["return_rate", "aov"],
    "minimum_detectable_effect": 0.05,
}

_EXPOSURES = """
INSERT INTO usecase_exposures (usecase_id, version, person_id, arm, at, at_ms, segment_id, subject, change_id)
SELECT 'bench-usecase', 1, concat('p', toString(number)), if(number % 10 = 0, 'control', 'treatment'),
       toDateTime(intDiv({start_ms} + (number * 7919) % {span_ms}, 1000)),
       {start_ms} + (number * 7919) % {span_ms},
       'bench-audience', '', concat('c', toString(number))
FROM numbers({count})
"""

_EVENTS = """
INSERT INTO event_persons (message_id, channel, type, event, person_id, revenue, timestamp, timestamp_ms)
SELECT concat('m', toString(number)), 'web',
       if(number % 4 = 0, 'page', 'track'),
       multiIf(number % 4 = 0, '', number % 13 = 1, 'Order Completed', number % 97 = 2, 'Product Returned',
               'Product Viewed'),
       concat('p', toString((number * 104729) % {persons})),
       multiIf(number % 4 = 0, 0., number % 13 = 1, 20. + (number % 180), number % 97 = 2, -35., 0.),
       toDateTime(intDiv({start_ms} + (number * 15485863) % {span_ms}, 1000)),
       {start_ms} + (number * 15485863) % {span_ms}
FROM numbers({first}, {count})
"""

_MERGES = """
INSERT INTO person_aliases (person_id, canonical_person_id, change_id, version)
SELECT concat('p', toString(number * 100 + 1)), concat('p', toString(number * 100 + 10)),
       concat('merge', toString(number)), 1
FROM numbers({count})
"""


def run_usecase_report_bench(
    base: Settings, exposures: int, events: int, rounds: int = 3, keep: bool = False, report: Report = print
) -> dict[str, Any]:
    """Fill, then time the report ``rounds`` times; returns the figures."""
    run = f"b{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(update={"clickhouse_database": f"{base.clickhouse_database}_bench_{run}"})
    apply_migrations(settings, report=lambda _msg: None)
    client = clickhouse_client(settings, settings.clickhouse_database)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in client.execute(sql)]

    try:
        (usecase,) = load_usecases([("bench", yaml.safe_dump(_USECASE))])
        now = datetime.now(UTC).replace(microsecond=0)
        started = now - timedelta(days=30)
        usecases.start(rows, rows, usecase, now=started)
        start_ms = int(started.timestamp() * 1000)
        report(f"filling {exposures:,} exposures and {events:,} events in {settings.clickhouse_database} ...")
        filling = time.perf_counter()
        client.execute(_EXPOSURES.format(start_ms=start_ms, span_ms=14 * DAY_MS, count=exposures))
        chunk = 2_000_000
        for first in range(0, events, chunk):
            client.execute(
                _EVENTS.format(
                    start_ms=start_ms,
                    span_ms=30 * DAY_MS,
                    persons=int(exposures * 1.5),
                    first=first,
                    count=min(chunk, events - first),
                )
            )
            report(f"  {min(first + chunk, events):,} events")
        client.execute(_MERGES.format(count=exposures // 100))
        filled_s = time.perf_counter() - filling
        report(f"filled in {filled_s:.1f}s")
        registration = usecases.latest(rows, usecase.id)
        assert registration is not None
        times: list[float] = []
        result = None
        for round_ in range(rounds):
            began = time.perf_counter()
            result = usecase_outcomes.report(rows, registration, now)
            times.append(time.perf_counter() - began)
            report(f"round {round_ + 1}: report in {times[-1]:.2f}s")
        assert result is not None
        control, treatment = result.arms
        return {
            "exposures": exposures,
            "events": events,
            "persons_in_report": control.persons + treatment.persons,
            "contaminated": result.contaminated,
            "report_s": [round(t, 2) for t in times],
            "report_s_best": round(min(times), 2),
            "fill_s": round(filled_s, 1),
            "database": settings.clickhouse_database if keep else None,
        }
    finally:
        if not keep:
            client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        client.disconnect()
