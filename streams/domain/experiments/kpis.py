"""The KPIs a use case can be measured on: each a per-person outcome over the person's attribution
window (from their first exposure), computed the same way for control and treatment.

The names are shared with the analysts' KPI library (``deploy/kpi/``); what each reads is documented
in ``docs/usecases.md``. Orders are ``Order Completed`` events; returns are ``Order Refunded`` and
``Product Returned`` (the Segment e-commerce spec); revenue is the one definition of
``streams/domain/revenue.py`` (orders add, returns subtract).
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.domain.experiments.model import MetricKind


@dataclass(frozen=True)
class UseCaseKpi:
    name: str
    kind: MetricKind
    meaning: str


USECASE_KPIS: dict[str, UseCaseKpi] = {
    kpi.name: kpi
    for kpi in (
        UseCaseKpi(
            "conversion_rate",
            MetricKind.PROPORTION,
            "share of persons with at least one order in their window",
        ),
        UseCaseKpi(
            "revenue_per_person",
            MetricKind.MEAN,
            "net revenue (orders minus returns) per person in their window, zero for persons who did not buy",
        ),
        UseCaseKpi("orders_per_person", MetricKind.MEAN, "orders per person in their window"),
        UseCaseKpi(
            "aov",
            MetricKind.RATIO,
            "average order value: revenue of the orders over the number of orders, per arm",
        ),
        UseCaseKpi(
            "return_rate",
            MetricKind.PROPORTION,
            "share of persons with at least one return or refund in their window (a guardrail)",
        ),
        UseCaseKpi(
            "repeat_purchase_rate",
            MetricKind.PROPORTION,
            "share of persons with two or more orders in their window",
        ),
        UseCaseKpi(
            "visit_rate",
            MetricKind.PROPORTION,
            "share of persons who came back (a page or screen view) after their exposure, in their window",
        ),
    )
}
