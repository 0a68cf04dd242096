"""Hand-built use-case reports for the renderer tests (text, HTML, and the browser test)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from streams.domain.experiments.model import (
    Arm,
    ArmSummary,
    CumulativePoint,
    Estimate,
    MetricKind,
    Power,
    Role,
    SampleRatio,
    UseCaseReport,
)

HYPOTHESIS = 'A 10% voucher <script>alert("x")</script> & "free" shipping win back lapsed buyers'


def estimate(kpi: str, role: Role, kind: MetricKind = MetricKind.PROPORTION, **overrides: Any) -> Estimate:
    values: dict[str, Any] = {
        "kpi": kpi,
        "kind": kind,
        "role": role,
        "control": 0.031,
        "treatment": 0.0352,
        "absolute_lift": 0.0042,
        "absolute_ci": (0.0011, 0.0073),
        "relative_lift": 0.1355,
        "relative_ci": (0.035, 0.236),
        "p_value": 0.0081,
        "alpha": 0.05,
    }
    values.update(overrides)
    return Estimate(**values)


def cumulative(days: int, start: date = date(2025, 3, 3)) -> tuple[CumulativePoint, ...]:
    """A lift settling at +0.4 pp with a CI that narrows as persons accumulate."""
    points = []
    for i in range(days):
        n = 800 * (i + 1)
        half = 0.03 / math.sqrt(i + 1)
        lift = 0.004 + 0.006 / (i + 1)
        points.append(CumulativePoint(start + timedelta(days=i), n, n + 7, lift, lift - half, lift + half))
    return tuple(points)


def make_report(**overrides: Any) -> UseCaseReport:
    values: dict[str, Any] = {
        "usecase_id": "winback-voucher",
        "version": 3,
        "hypothesis": HYPOTHESIS,
        "audience": "lapsed_buyers (person)",
        "started_at": datetime(2025, 3, 3, 9, 0, tzinfo=UTC),
        "stopped_at": None,
        "attribution_window_days": 7,
        "control_share": 0.5,
        "alpha": 0.05,
        "arms": (
            ArmSummary(Arm.CONTROL, 11200, 347, 0.031, 1.874, 402, 52.215),
            ArmSummary(Arm.TREATMENT, 11207, 395, 0.0352, 2.1, 455, 51.7234),
        ),
        "estimates": (
            estimate("conversion", Role.PRIMARY),
            estimate(
                "revenue_per_person",
                Role.GUARDRAIL,
                MetricKind.MEAN,
                control=1.874,
                treatment=2.1,
                absolute_lift=0.226,
                absolute_ci=(-0.05, 0.502),
                relative_lift=0.1206,
                relative_ci=(-0.027, 0.268),
                p_value=0.108,
            ),
            estimate(
                "aov",
                Role.EXPLORATORY,
                MetricKind.RATIO,
                control=52.215,
                treatment=51.7234,
                absolute_lift=-0.4916,
                absolute_ci=(-4.1, 3.12),
                relative_lift=-0.0094,
                relative_ci=(-0.078, 0.06),
                p_value=0.79,
            ),
        ),
        "sample_ratio": SampleRatio(11200, 11207, 0.5, 0.0022, 0.43),
        "power": Power(0.031, 0.1, 0.05, 0.8, 14000, 14000, 0.71),
        "cumulative": cumulative(14),
        "contaminated": 12,
        "generated_at": datetime(2025, 3, 17, 6, 30, tzinfo=UTC),
    }
    values.update(overrides)
    return UseCaseReport(**values)


def with_nans(report: UseCaseReport) -> UseCaseReport:
    """``report`` with nan wherever the model allows it: an empty arm's rates, undefined tests."""
    nan = math.nan
    estimates = (
        replace(report.estimates[0], p_value=nan, absolute_lift=nan, absolute_ci=(nan, nan)),
        replace(report.estimates[1], control=nan, relative_lift=None, relative_ci=None, p_value=nan),
        replace(report.estimates[2], relative_ci=(nan, 0.1), treatment=nan),
    )
    arms = (replace(report.arms[0], aov=nan, conversion_rate=nan), report.arms[1])
    points = list(report.cumulative)
    points[3] = replace(points[3], absolute_lift=nan)
    points[5] = replace(points[5], ci_low=nan, ci_high=math.inf)
    return replace(
        report,
        estimates=estimates,
        arms=arms,
        cumulative=tuple(points),
        sample_ratio=replace(report.sample_ratio, p_value=nan),
        power=replace(report.power, reached=nan),
    )
