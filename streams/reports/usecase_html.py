"""A use-case report as one self-contained HTML page: inline CSS, charts as inline SVG drawn here, no
script and nothing fetched, so it opens offline, in a mail attachment or an archive.

Two charts: the primary KPI's cumulative lift over time with its confidence band and the zero line
(``svg#cumulative-lift``), and every KPI's relative lift with its interval (``svg#kpi-lifts``).
Every text from the report is escaped (the hypothesis is the user's text); a figure that is not a
number (an empty arm, an undefined test) is shown as "-" and never reaches an SVG coordinate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from streams.domain.experiments.model import CumulativePoint, Estimate, MetricKind, Role, UseCaseReport
from streams.reports.usecase_text import interval, p_value, percent, value, verdict

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2433; margin: 2rem auto; max-width: 980px; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
.muted { color: #5b6475; } table { border-collapse: collapse; width: 100%; margin: .6rem 0; }
th, td { text-align: right; padding: .3rem .5rem; border-bottom: 1px solid #e3e6ec; }
th:first-child, td:first-child { text-align: left; } th { font-weight: 600; background: #f5f6f9; }
.badge { display: inline-block; padding: .15rem .55rem; border-radius: .8rem; font-weight: 600; }
.ok { background: #dff3e4; color: #185c2c; } .bad { background: #fbe0e0; color: #8a1c1c; }
.exploratory { color: #6b7280; font-style: italic; } .primary td { font-weight: 600; }
svg text { font: 12px system-ui, sans-serif; fill: #394150; }
"""
_W, _H = 900, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 84, 36, 30, 50


def _finite(*numbers: float | None) -> bool:
    return all(n is not None and math.isfinite(n) for n in numbers)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high]."""
    span = high - low
    step = 10 ** math.floor(math.log10(span / count))
    for factor in (1, 2, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _scale(low: float, high: float, start: float, end: float) -> tuple[float, float]:
    """(slope, offset) mapping [low, high] onto [start, end]."""
    slope = (end - start) / (high - low)
    return slope, start - low * slope


def _padded(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if high - low < 1e-12:
        low, high = low - 1, high + 1
    pad = (high - low) * 0.08
    return low - pad, high + pad


def cumulative_chart(points: Sequence[CumulativePoint], kind: MetricKind, title: str) -> str:
    """The cumulative lift with its band, or a note when there is nothing to draw yet."""
    drawn = [p for p in points if _finite(p.absolute_lift, p.ci_low, p.ci_high)]
    if len(drawn) < 1:
        return '<p class="muted" id="cumulative-lift-empty">Not enough data yet for the lift over time.</p>'
    low, high = _padded([0.0, *(p.ci_low for p in drawn), *(p.ci_high for p in drawn)])
    ys, yo = _scale(low, high, _H - _BOTTOM, _TOP)
    count = max(len(drawn) - 1, 1)
    xs = [_LEFT + (_W - _LEFT - _RIGHT) * i / count for i in range(len(drawn))]
    if len(drawn) == 1:
        xs = [(_LEFT + _W - _RIGHT) / 2]

    def y(v: float) -> float:
        return v * ys + yo

    band = [f"{x:.1f},{y(p.ci_high):.1f}" for x, p in zip(xs, drawn, strict=True)]
    band += [f"{x:.1f},{y(p.ci_low):.1f}" for x, p in reversed(list(zip(xs, drawn, strict=True)))]
    line = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y(p.absolute_lift):.1f}"
        for i, (x, p) in enumerate(zip(xs, drawn, strict=True))
    )
    if len(drawn) == 1:  # one day: a point with its interval
        x = xs[0]
        line = f"M{x - 4:.1f},{y(drawn[0].absolute_lift):.1f} L{x + 4:.1f},{y(drawn[0].absolute_lift):.1f}"
    parts = [
        f'<svg id="cumulative-lift" viewBox="0 0 {_W} {_H}" width="100%" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f'<text x="{_LEFT}" y="18" font-weight="600">{escape(title)}</text>',
    ]
    for tick in _ticks(low, high):
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#eef0f4"/>'
            f'<text x="{_LEFT - 8}" y="{y(tick) + 4:.1f}" text-anchor="end">'
            f"{escape(value(kind, tick, True))}</text>"
        )
    parts.append(f'<polygon class="ci-band" points="{" ".join(band)}" fill="#9cc3f5" fill-opacity="0.45"/>')
    parts.append(
        f'<line class="zero-line" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(0):.1f}" y2="{y(0):.1f}" '
        'stroke="#6b7280" stroke-dasharray="4 3"/>'
    )
    parts.append(f'<path class="lift-line" d="{line}" fill="none" stroke="#1f5fbf" stroke-width="2.5"/>')
    step = max(1, len(drawn) // 8)
    for i in range(0, len(drawn), step):
        parts.append(
            f'<text x="{xs[i]:.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">{drawn[i].day:%d %b}</text>'
        )
    parts.append(
        f'<text x="{(_LEFT + _W) / 2:.0f}" y="{_H - 8}" text-anchor="middle">day of first exposure '
        "(persons exposed up to that day)</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def lifts_chart(estimates: Sequence[Estimate]) -> str:
    """Every KPI's relative lift with its interval (a forest plot)."""
    rows = [e for e in estimates if e.relative_lift is not None and e.relative_ci and _finite(*e.relative_ci)]
    if not rows:
        return ""
    bounds = [0.0]
    for e in rows:
        assert e.relative_ci is not None
        bounds += [e.relative_ci[0], e.relative_ci[1]]
    low, high = _padded(bounds)
    label_w, height = 230, 34 * len(rows) + 60
    xs, xo = _scale(low, high, label_w, _W - _RIGHT)

    def x(v: float) -> float:
        return v * xs + xo

    parts = [
        f'<svg id="kpi-lifts" viewBox="0 0 {_W} {height}" width="100%" role="img" '
        'aria-label="relative lift per KPI" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="zero-line" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="10" y2="{height - 40}" '
        'stroke="#6b7280" stroke-dasharray="4 3"/>',
    ]
    for tick in _ticks(low, high):
        parts.append(f'<text x="{x(tick):.1f}" y="{height - 22}" text-anchor="middle">{tick:+.0%}</text>')
    for i, e in enumerate(rows):
        assert e.relative_ci is not None and e.relative_lift is not None
        cy = 30 + 34 * i
        colour = "#0f766e" if e.role is not Role.EXPLORATORY else "#9aa3b2"
        label = e.kpi + ("" if e.role is not Role.EXPLORATORY else " (exploratory)")
        parts.append(f'<text x="8" y="{cy + 4}">{escape(label)}</text>')
        parts.append(
            f'<line class="kpi-interval" x1="{x(e.relative_ci[0]):.1f}" x2="{x(e.relative_ci[1]):.1f}" '
            f'y1="{cy}" y2="{cy}" stroke="{colour}" stroke-width="3"/>'
            f'<circle cx="{x(e.relative_lift):.1f}" cy="{cy}" r="5" fill="{colour}"/>'
        )
    parts.append(
        f'<text x="{(label_w + _W) / 2:.0f}" y="{height - 4}" text-anchor="middle">relative lift '
        "(treatment vs control) with its confidence interval</text></svg>"
    )
    return "".join(parts)


def _estimate_row(e: Estimate) -> str:
    role = {
        Role.PRIMARY: "primary",
        Role.GUARDRAIL: "guardrail",
        Role.EXPLORATORY: "exploratory, not pre-registered",
    }
    css = {Role.PRIMARY: "primary", Role.GUARDRAIL: "", Role.EXPLORATORY: "exploratory"}[e.role]
    relative = percent(e.relative_lift)
    if e.relative_ci:
        relative += f" [{percent(e.relative_ci[0])}, {percent(e.relative_ci[1])}]"
    cells = [
        e.kpi,
        role[e.role],
        value(e.kind, e.control),
        value(e.kind, e.treatment),
        f"{value(e.kind, e.absolute_lift, True)} {interval(e.kind, e.absolute_ci)}",
        relative,
        p_value(e.p_value),
        verdict(e),
    ]
    return f'<tr class="{css}">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>"


def render_html(report: UseCaseReport) -> str:
    level = f"{1 - report.alpha:.0%}"
    srm = report.sample_ratio
    srm_badge = (
        f'<span class="badge bad" id="srm">Sample ratio mismatch (p = {escape(p_value(srm.p_value))}): '
        "do not trust this report</span>"
        if srm.mismatch
        else f'<span class="badge ok" id="srm">SRM OK (p = {escape(p_value(srm.p_value))})</span>'
    )
    arms = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(c)}</td>"
            for c in (
                arm.arm.value,
                f"{arm.persons:,}",
                f"{arm.conversions:,}",
                value(MetricKind.PROPORTION, arm.conversion_rate),
                value(MetricKind.MEAN, arm.revenue_per_person),
                f"{arm.orders:,}",
                value(MetricKind.RATIO, arm.aov),
            )
        )
        + "</tr>"
        for arm in report.arms
    )
    power = report.power
    reached = f"{power.reached:.0%}" if _finite(power.reached) else "-"
    plan = (
        f"Power reached: <b>{reached}</b> of {power.target_power:.0%} planned to find "
        f"{power.minimum_detectable_effect:+.0%} on the primary KPI (baseline {power.baseline:.4g}); "
        f"the plan needs {power.needed_control:,} control and {power.needed_treatment:,} treatment persons."
        if _finite(power.baseline)
        else "Power: no baseline yet (no control persons, none in the definition)."
    )
    primary = report.primary
    stopped = f"stopped {report.stopped_at:%Y-%m-%d %H:%M} UTC" if report.stopped_at else "running"
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(report.usecase_id)} v{report.version}: use-case report</title>",
            f"<style>{_STYLE}</style></head><body>",
            f'<h1>{escape(report.usecase_id)} <span class="muted">v{report.version}</span></h1>',
            f'<p id="hypothesis"><b>Hypothesis:</b> {escape(report.hypothesis)}</p>',
            f'<p class="muted">Audience {escape(report.audience)}; {report.control_share:.0%} control; '
            f"outcomes within {report.attribution_window_days} days of a person's first exposure; "
            f"alpha {report.alpha:g}. "
            f"Started {report.started_at:%Y-%m-%d %H:%M} UTC, {stopped}. Generated "
            f"{report.generated_at:%Y-%m-%d %H:%M} UTC.</p>",
            f"<p>{srm_badge} &nbsp; Contaminated persons excluded: {report.contaminated:,}</p>",
            f"<h2>Primary KPI: {escape(primary.kpi)}: {escape(verdict(primary))}</h2>",
            f"<p>Lift {escape(value(primary.kind, primary.absolute_lift, True))}, {level} CI "
            f"{escape(interval(primary.kind, primary.absolute_ci))}, "
            f"p = {escape(p_value(primary.p_value))}.</p>",
            cumulative_chart(
                report.cumulative, primary.kind, f"Cumulative lift of {primary.kpi} ({level} CI)"
            ),
            "<h2>Arms</h2><table><tr><th>arm</th><th>persons</th><th>buyers</th><th>conversion</th>"
            "<th>revenue / person</th><th>orders</th><th>AOV</th></tr>",
            arms,
            "</table><h2>Every KPI</h2><table><tr><th>KPI</th><th>role</th><th>control</th><th>treatment</th>"
            f"<th>lift ({level} CI)</th><th>relative</th><th>p-value</th><th>verdict</th></tr>",
            "".join(_estimate_row(e) for e in report.estimates),
            "</table>",
            '<p class="muted">Exploratory KPIs were not named before the start: leads for the next use case, '
            "never results.</p>",
            lifts_chart(report.estimates),
            f"<h2>Power</h2><p>{plan}</p>",
            "</body></html>",
        ]
    )
