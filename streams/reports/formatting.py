"""How the report's numbers read, shared by the text and the HTML renderer.

Anything not finite (nan, inf) and anything missing reads ``-``. Rates and relative lifts are percentages,
the absolute lift of a proportion is in percentage points, money has two decimals. The model carries no
unit for a mean or ratio KPI, so those read as plain numbers with two decimals.
"""

from __future__ import annotations

import math
from datetime import datetime

from streams.domain.experiments.model import (
    Estimate,
    MetricKind,
    Role,
    SampleRatio,
    UseCaseReport,
)

DASH = "-"

ROLE_LABELS = {
    Role.PRIMARY: "primary",
    Role.GUARDRAIL: "guardrail",
    Role.EXPLORATORY: "exploratory, not pre-registered",
}


def finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def count(n: int) -> str:
    return f"{n:,}"


def money(x: float) -> str:
    return f"{x:,.2f}" if finite(x) else DASH


def percent(x: float | None, digits: int = 2) -> str:
    return f"{x * 100:.{digits}f}%" if x is not None and finite(x) else DASH


def signed_percent(x: float | None, digits: int = 1) -> str:
    return f"{x * 100:+.{digits}f}%" if x is not None and finite(x) else DASH


def value(x: float, kind: MetricKind) -> str:
    """A KPI's value in one arm: a rate for a proportion, a plain number otherwise."""
    if kind is MetricKind.PROPORTION:
        return percent(x)
    return f"{x:,.2f}" if finite(x) else DASH


def lift(x: float, kind: MetricKind) -> str:
    """An absolute lift: percentage points for a proportion, a signed number otherwise."""
    if not finite(x):
        return DASH
    return f"{x * 100:+.2f} pp" if kind is MetricKind.PROPORTION else f"{x:+,.2f}"


def absolute_parts(e: Estimate) -> tuple[str, str]:
    """The absolute lift and its interval ``[low, high]``; ("-", "") when none of them is finite."""
    low, high = e.absolute_ci
    if not any(finite(x) for x in (e.absolute_lift, low, high)):
        return DASH, ""
    return lift(e.absolute_lift, e.kind), f"[{lift(low, e.kind)}, {lift(high, e.kind)}]"


def relative_parts(e: Estimate) -> tuple[str, str]:
    """The relative lift and its interval; ("-", "") without a relative lift (control 0) or a finite bound."""
    low, high = e.relative_ci if e.relative_ci is not None else (math.nan, math.nan)
    if e.relative_lift is None or not any(finite(x) for x in (e.relative_lift, low, high)):
        return DASH, ""
    return signed_percent(e.relative_lift), f"[{signed_percent(low)}, {signed_percent(high)}]"


def absolute_with_ci(e: Estimate) -> str:
    return " ".join(part for part in absolute_parts(e) if part)


def relative_with_ci(e: Estimate) -> str:
    return " ".join(part for part in relative_parts(e) if part)


def p_value(p: float) -> str:
    if not finite(p):
        return DASH
    if p >= 0.01:
        return f"{p:.2f}"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def verdict(e: Estimate) -> str:
    if not finite(e.p_value):
        return DASH
    return "significant" if e.significant else "not significant"


def ci_label(alpha: float) -> str:
    return f"{(1 - alpha) * 100:g}% CI" if finite(alpha) else "CI"


def srm_line(s: SampleRatio) -> str:
    if s.mismatch:
        return f"SAMPLE RATIO MISMATCH (p={p_value(s.p_value)}): do not trust this report"
    if not finite(s.p_value):
        return "SRM not checked (p=-)"
    return f"SRM OK (p={p_value(s.p_value)})"


def primary(report: UseCaseReport) -> Estimate | None:
    return next((e for e in report.estimates if e.role is Role.PRIMARY), None)


def primary_kind(report: UseCaseReport) -> MetricKind:
    e = primary(report)
    return e.kind if e is not None else MetricKind.MEAN


def power_lines(report: UseCaseReport) -> list[str]:
    """The plan for the primary KPI against what the data has reached, as two sentences."""
    p = report.power
    control, treatment = report.arms[0].persons, report.arms[1].persons
    kpi = primary(report)
    name = f" of {kpi.kpi}" if kpi is not None else ""
    plan = (
        f"Power{name}: {percent(p.reached, 1)} reached of {percent(p.target_power, 0)} planned"
        f" (minimum detectable effect {signed_percent(p.minimum_detectable_effect)} relative"
        f" on a baseline of {value(p.baseline, primary_kind(report))}, alpha {p.alpha:g})"
    )
    persons = (
        f"Persons per arm: needed {count(p.needed_control)} control / {count(p.needed_treatment)} treatment,"
        f" have {count(control)} ({_share(control, p.needed_control)})"
        f" / {count(treatment)} ({_share(treatment, p.needed_treatment)})"
    )
    return [plan, persons]


def _share(have: int, needed: int) -> str:
    return percent(have / needed, 0) if needed > 0 else DASH


def when(t: datetime | None, missing: str = "running") -> str:
    return t.isoformat(sep=" ", timespec="minutes") if t is not None else missing


def header_fields(report: UseCaseReport) -> list[tuple[str, str]]:
    """The report's header as (label, text) pairs, text not yet escaped for any medium."""
    return [
        ("Use case", report.usecase_id),
        ("Version", str(report.version)),
        ("Hypothesis", report.hypothesis),
        ("Audience", report.audience),
        ("Started", when(report.started_at)),
        ("Stopped", when(report.stopped_at)),
        ("Attribution window", f"{report.attribution_window_days} days"),
        ("Control share", percent(report.control_share, 1)),
        ("Alpha", f"{report.alpha:g}"),
        ("Generated", when(report.generated_at)),
    ]
