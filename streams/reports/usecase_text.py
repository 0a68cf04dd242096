"""A use-case report as plain text for the terminal (``omniseg usecases report``, the demo)."""

from __future__ import annotations

import math

from streams.domain.experiments.model import Estimate, MetricKind, Role, UseCaseReport

_ROLE = {
    Role.PRIMARY: "primary",
    Role.GUARDRAIL: "guardrail",
    Role.EXPLORATORY: "exploratory, not pre-registered",
}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def value(kind: MetricKind, number: float | None, signed: bool = False) -> str:
    """A KPI figure: rates as percentages (points when ``signed``), money and counts with 2 decimals."""
    if not _finite(number):
        return "-"
    assert number is not None
    if kind is MetricKind.PROPORTION:
        return f"{number * 100:+.2f} pts" if signed else f"{number:.2%}"
    return f"{number:+,.2f}" if signed else f"{number:,.2f}"


def percent(number: float | None) -> str:
    return f"{number:+.1%}" if _finite(number) else "-"


def p_value(number: float) -> str:
    if not math.isfinite(number):
        return "-"
    return "<0.0001" if number < 0.0001 else f"{number:.4f}"


def verdict(estimate: Estimate) -> str:
    if not math.isfinite(estimate.p_value):
        return "no test (too little data)"
    if not estimate.significant:
        return "not significant"
    better = estimate.absolute_lift > 0
    if estimate.kpi == "return_rate":  # more returns is worse
        better = not better
    return f"significant, {'better' if better else 'worse'}"


def interval(kind: MetricKind, bounds: tuple[float, float]) -> str:
    low, high = bounds
    return f"[{value(kind, low, True)}, {value(kind, high, True)}]"


def render_text(report: UseCaseReport) -> str:
    lines = [
        f"use case {report.usecase_id} v{report.version}: {report.hypothesis}",
        f"audience {report.audience}; {report.control_share:.0%} control; outcomes within "
        f"{report.attribution_window_days} days of a person's first exposure; alpha {report.alpha:g}",
        f"started {report.started_at:%Y-%m-%d %H:%M} UTC, "
        + (f"stopped {report.stopped_at:%Y-%m-%d %H:%M} UTC" if report.stopped_at else "running"),
        "",
        f"{'arm':<10}{'persons':>10}{'buyers':>9}{'conversion':>12}{'revenue/person':>16}{'orders':>8}{'AOV':>10}",
    ]
    for arm in report.arms:
        lines.append(
            f"{arm.arm.value:<10}{arm.persons:>10,}{arm.conversions:>9,}"
            f"{value(MetricKind.PROPORTION, arm.conversion_rate):>12}"
            f"{value(MetricKind.MEAN, arm.revenue_per_person):>16}{arm.orders:>8,}"
            f"{value(MetricKind.RATIO, arm.aov):>10}"
        )
    lines.append("")
    level = f"{1 - report.alpha:.0%}"
    for estimate in report.estimates:
        kind = estimate.kind
        lines.append(
            f"{estimate.kpi} ({_ROLE[estimate.role]}): control {value(kind, estimate.control)}, "
            f"treatment {value(kind, estimate.treatment)}; lift {value(kind, estimate.absolute_lift, True)} "
            f"{level} CI {interval(kind, estimate.absolute_ci)}, relative {percent(estimate.relative_lift)}"
            + (
                f" [{percent(estimate.relative_ci[0])}, {percent(estimate.relative_ci[1])}]"
                if estimate.relative_ci
                else ""
            )
            + f"; p = {p_value(estimate.p_value)}: {verdict(estimate)}"
        )
    srm = report.sample_ratio
    lines.append("")
    if srm.mismatch:
        lines.append(
            f"SAMPLE RATIO MISMATCH (p = {p_value(srm.p_value)}): {srm.control:,} control / "
            f"{srm.treatment:,} treatment for a {srm.expected_control_share:.0%} control share; "
            "do not trust this report"
        )
    else:
        lines.append(
            f"SRM OK (p = {p_value(srm.p_value)}): {srm.control:,} control / {srm.treatment:,} treatment for "
            f"a {srm.expected_control_share:.0%} control share"
        )
    power = report.power
    reached = f"{power.reached:.0%}" if math.isfinite(power.reached) else "-"
    lines.append(
        f"power: {reached} reached of {power.target_power:.0%} planned to find "
        f"{power.minimum_detectable_effect:+.0%} on the primary KPI "
        f"(needs {power.needed_control:,} control + {power.needed_treatment:,} treatment; "
        f"baseline {power.baseline:.4g})"
        if math.isfinite(power.baseline)
        else "power: no baseline yet (no control persons and none in the definition)"
    )
    lines.append(f"contaminated persons excluded (merges joined both arms): {report.contaminated:,}")
    return "\n".join(lines)
