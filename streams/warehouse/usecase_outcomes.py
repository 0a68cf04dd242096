"""Per-arm sufficient statistics of a use case's persons, computed in ClickHouse.

One query reads the persons exposed (their first exposure, per canonical person: a merged-away id
counts as its survivor), each person's outcomes in the attribution window after that exposure (from
``event_persons``), and reduces them per arm and day of first exposure to sums, sums of squares and
cross products: enough for every test of ``streams/domain/experiments/statistics.py`` and for the
cumulative chart, so a million persons move a few hundred numbers. Persons whose exposures fall in
both arms (a merge joined persons of different arms) are *contaminated*: counted, and left out.

The same query over ``segment_changes`` entries instead of exposures measures what the audience did
before the use case (the baseline and inflow for the sample-size plan).

Written for ClickHouse 18.16 and current ClickHouse (ANY LEFT JOIN ... USING, no window functions).
Persons are joined and grouped by cityHash64 of their canonical id, not the id's text: a third faster,
and two of a million persons share a 64-bit hash with a chance of about 3e-8.
The inner join is ALL: a current ClickHouse's ANY INNER JOIN keeps one row per key of *both* sides, and
the right side here has one row per person anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from streams.domain.experiments.model import Arm, Power, UseCaseReport
from streams.domain.experiments.outcomes import FLOAT_FIELDS, SUM_FIELDS, ArmDay, total
from streams.domain.experiments.report import baseline_of
from streams.domain.experiments.report import build as build_report
from streams.domain.experiments.report import plan as plan_power
from streams.domain.experiments.usecases import UseCase, UseCaseAudience
from streams.warehouse.sql_text import Rows, integer, quote
from streams.warehouse.usecases import Registration

DAY_MS = 86_400_000


_SUMS = """
    count() AS persons,
    sum(p_orders > 0) AS converted,
    sum(p_revenue) AS revenue,
    sum(p_revenue * p_revenue) AS revenue_sq,
    sum(p_orders) AS orders,
    sum(p_orders * p_orders) AS orders_sq,
    sum(p_order_revenue) AS order_revenue,
    sum(p_order_revenue * p_order_revenue) AS order_revenue_sq,
    sum(p_order_revenue * p_orders) AS order_revenue_orders,
    sum(p_returns > 0) AS returners,
    sum(p_orders >= 2) AS repeaters,
    sum(p_visits > 0) AS visitors"""

# An alias equal to a column name would shadow the column inside the same SELECT's aggregates (18.16
# then sees an aggregate inside an aggregate), so per-person values are p_* and the arm is exposed_arm.
_CANONICAL = "(SELECT person_id, canonical_person_id FROM person_canonical) AS canonical"


def _exposed(source: str) -> str:
    """Per canonical person: first exposure (ms), number of distinct arms, an arm. ``source`` yields
    (person_id, arm_name, at_ms)."""
    return f"""
        SELECT person, min(at_ms) AS first_ms, uniqExact(arm_name) AS arms, any(arm_name) AS exposed_arm
        FROM
        (
            SELECT cityHash64(if(canonical_person_id = '', person_id, canonical_person_id)) AS person,
                   arm_name, at_ms
            FROM ({source}) AS source
            ANY LEFT JOIN {_CANONICAL} USING person_id
        )
        GROUP BY person"""


def _stats_sql(source: str, window_days: int, since_ms: int) -> str:
    window_ms = integer(window_days * DAY_MS)
    exposed = _exposed(source)
    return f"""
SELECT exposed_arm, toDate(toDateTime(intDiv(first_ms, 1000))) AS day, {_SUMS}
FROM
(
    SELECT person, exposed_arm, first_ms FROM ({exposed}) WHERE arms = 1
) AS exposed
ANY LEFT JOIN
(
    SELECT
        person,
        countIf(event = 'Order Completed') AS p_orders,
        sumIf(revenue, event = 'Order Completed') AS p_order_revenue,
        sum(revenue) AS p_revenue,
        countIf(event IN ('Order Refunded', 'Product Returned')) AS p_returns,
        countIf(type IN ('page', 'screen')) AS p_visits
    FROM
    (
        SELECT cityHash64(if(canonical_person_id = '', person_id, canonical_person_id)) AS person,
               event, type, revenue, timestamp_ms
        FROM
        (
            SELECT person_id, event, toString(type) AS type, revenue, timestamp_ms
            FROM event_persons FINAL
            WHERE timestamp_ms > {integer(since_ms)}
        ) AS events
        ANY LEFT JOIN {_CANONICAL} USING person_id
    ) AS person_events
    ALL INNER JOIN (SELECT person, first_ms FROM ({exposed}) WHERE arms = 1) AS windows USING person
    WHERE timestamp_ms > first_ms AND timestamp_ms <= first_ms + {window_ms}
    GROUP BY person
) AS outcomes USING person
GROUP BY exposed_arm, day
ORDER BY exposed_arm, day"""


def _arm_days(rows: Rows, sql: str) -> list[ArmDay]:
    found: list[ArmDay] = []
    for row in rows(sql):
        arm, day, *sums = row
        # chDB gives text: convert each sum to its field's type.
        values: dict[str, Any] = {
            name: (float(value) if name in FLOAT_FIELDS else int(value))
            for name, value in zip(SUM_FIELDS, sums, strict=True)
        }
        found.append(ArmDay(Arm(str(arm)), _date(day), **values))
    return found


def _date(value: date | datetime | str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def exposure_stats(
    rows: Rows, usecase_id: str, version: int, window_days: int, start_ms: int, end_ms: int
) -> list[ArmDay]:
    """The arms' sums for one version of a use case, exposures in [start_ms, end_ms)."""
    source = f"""
        SELECT person_id, toString(arm) AS arm_name, at_ms FROM usecase_exposures
        WHERE usecase_id = {quote(usecase_id)} AND version = {integer(version)}
          AND at_ms >= {integer(start_ms)} AND at_ms < {integer(end_ms)}"""
    return _arm_days(rows, _stats_sql(source, window_days, start_ms))


def contaminated(rows: Rows, usecase_id: str, version: int) -> int:
    """Canonical persons whose exposures fall in both arms."""
    source = f"""
        SELECT person_id, toString(arm) AS arm_name, at_ms FROM usecase_exposures
        WHERE usecase_id = {quote(usecase_id)} AND version = {integer(version)}"""
    ((count,),) = rows(f"SELECT count() FROM ({_exposed(source)}) WHERE arms > 1")
    return int(count)


def audience_history(
    rows: Rows, audience: UseCaseAudience, window_days: int, start_ms: int, end_ms: int
) -> list[ArmDay]:
    """Before a use case: the persons who entered its audience in [start_ms, end_ms), as one arm
    (treatment), with their outcomes in the window; the plan's baseline and inflow."""
    source = f"""
        SELECT person_id, 'treatment' AS arm_name, at_ms FROM segment_changes
        WHERE segment_id = {quote(audience.segment)} AND subject = {quote(audience.subject or "")}
          AND change = 'entered' AND at_ms >= {integer(start_ms)} AND at_ms < {integer(end_ms)}"""
    return _arm_days(rows, _stats_sql(source, window_days, start_ms))


def report(rows: Rows, registration: Registration, now: datetime) -> UseCaseReport:
    """The report of one registered version, over its exposures up to its stop (or now)."""
    usecase = registration.usecase()
    start_ms = int(registration.started_at.timestamp() * 1000)
    end = registration.stopped_at or now
    end_ms = int(end.timestamp() * 1000) + 1
    days = exposure_stats(
        rows, registration.usecase_id, registration.version, usecase.attribution_window_days, start_ms, end_ms
    )
    return build_report(
        usecase,
        registration.version,
        registration.started_at,
        registration.stopped_at,
        days,
        contaminated(rows, registration.usecase_id, registration.version),
        now,
    )


@dataclass(frozen=True)
class Plan:
    """The sample-size plan of a use case before its start, from its audience's recent history."""

    power: Power
    entrants_per_day: float  # persons entering the audience per day, over the history looked at
    history_days: int
    measured_baseline: bool  # False: the definition's baseline was used

    @property
    def days_needed(self) -> float:
        """Days of inflow until both arms have their persons, plus one window for their outcomes."""
        needed = self.power.needed_control + self.power.needed_treatment
        if self.entrants_per_day <= 0:
            return float("inf")
        return needed / self.entrants_per_day


def plan(rows: Rows, usecase: UseCase, now: datetime, history_days: int = 28) -> Plan:
    """Persons needed per arm and how long the audience's inflow takes to bring them: the baseline
    (unless the definition gives one) and the inflow are those of the persons who entered the
    audience in the ``history_days`` before the last full window (so their outcomes are complete)."""
    end_ms = int(now.timestamp() * 1000) - usecase.attribution_window_days * DAY_MS
    start_ms = end_ms - history_days * DAY_MS
    days = audience_history(rows, usecase.audience, usecase.attribution_window_days, start_ms, end_ms)
    entrants = total(Arm.TREATMENT, days)
    measured, spread = baseline_of(usecase, entrants)
    baseline = usecase.baseline if usecase.baseline is not None else measured
    power = plan_power(usecase, baseline, spread, 0, 0)
    return Plan(power, entrants.persons / history_days, history_days, usecase.baseline is None)
