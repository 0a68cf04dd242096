"""The per-arm sums a use-case report is computed from, and each KPI's sufficient statistics of them.

ClickHouse reduces every exposed person's outcomes in their attribution window to these sums, per arm
and day of first exposure (``streams/warehouse/usecase_outcomes.py``); everything after is arithmetic
on a few numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date

from streams.domain.experiments.model import Arm, Moments, Proportion, RatioMoments, Stats


@dataclass(frozen=True)
class ArmDay:
    """The sums over the persons of one arm first exposed on one day."""

    arm: Arm
    day: date
    persons: int
    converted: int  # persons with an order in their window
    revenue: float  # net revenue (orders minus returns)
    revenue_sq: float
    orders: int
    orders_sq: int
    order_revenue: float  # the value of the orders (AOV's numerator)
    order_revenue_sq: float
    order_revenue_orders: float  # sum of order_revenue * orders, for AOV's covariance
    returners: int  # persons with a return or refund
    repeaters: int  # persons with two or more orders
    visitors: int  # persons with a page or screen view after their exposure


SUM_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ArmDay))[2:]
FLOAT_FIELDS = frozenset(
    {"revenue", "revenue_sq", "order_revenue", "order_revenue_sq", "order_revenue_orders"}
)


def total(arm: Arm, days: Iterable[ArmDay], until: date | None = None) -> ArmDay:
    """The sums of ``arm`` over ``days`` (those up to ``until`` when given), as one ArmDay."""
    sums: dict[str, float] = dict.fromkeys(SUM_FIELDS, 0)
    last = date.min
    for day in days:
        if day.arm is not arm or (until is not None and day.day > until):
            continue
        last = max(last, day.day)
        for name in SUM_FIELDS:
            sums[name] += getattr(day, name)
    return ArmDay(
        arm,
        last,
        **{name: (float(value) if name in FLOAT_FIELDS else int(value)) for name, value in sums.items()},  # type: ignore[arg-type]
    )


def kpi_stats(kpi: str, sums: ArmDay) -> Stats:
    """The sufficient statistics of ``kpi`` (a name of USECASE_KPIS) for one arm."""
    n = sums.persons
    if kpi == "conversion_rate":
        return Proportion(n, sums.converted)
    if kpi == "return_rate":
        return Proportion(n, sums.returners)
    if kpi == "repeat_purchase_rate":
        return Proportion(n, sums.repeaters)
    if kpi == "visit_rate":
        return Proportion(n, sums.visitors)
    if kpi == "revenue_per_person":
        return Moments(n, sums.revenue, sums.revenue_sq)
    if kpi == "orders_per_person":
        return Moments(n, float(sums.orders), float(sums.orders_sq))
    if kpi == "aov":
        return RatioMoments(
            n,
            sums.order_revenue,
            float(sums.orders),
            sums.order_revenue_sq,
            float(sums.orders_sq),
            sums.order_revenue_orders,
        )
    raise KeyError(f"unknown use-case KPI {kpi!r}")
