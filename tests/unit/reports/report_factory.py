"""Use-case reports for the renderer tests, built the way the product builds them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import yaml

from streams.domain.experiments.model import Arm, UseCaseReport
from streams.domain.experiments.outcomes import ArmDay
from streams.domain.experiments.report import build
from streams.domain.experiments.usecases import load_usecases

DEFINITION = {
    "id": "shoes-reminder",
    "hypothesis": "Reminders make shoe browsers buy more <script>alert('x')</script> within two weeks.",
    "audience": "browsed",
    "channels": ["email"],
    "primary_kpi": "conversion_rate",
    "guardrail_kpis": ["return_rate", "aov"],
    "minimum_detectable_effect": 0.2,
}


def _day(arm: Arm, d: int, persons: int, converted: int) -> ArmDay:
    revenue = converted * 50.0 + (d % 3) * 7
    return ArmDay(
        arm, date(2026, 3, d), persons, converted, revenue, revenue * 60, converted, converted + d % 2,
        revenue, revenue * 60, revenue * 1.1, converted // 10, converted // 20, persons // 2,
    )  # fmt: skip


def sample_report(days: int = 12) -> UseCaseReport:
    (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    arm_days = []
    for d in range(1, days + 1):
        arm_days.append(_day(Arm.CONTROL, d, 100 + d, 10 + d % 4))
        arm_days.append(_day(Arm.TREATMENT, d, 900 + 5 * d, 120 + 3 * d))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    return build(usecase, 1, at, None, arm_days, contaminated=2, generated_at=at)
