"""Inline SVG charts for the HTML report, drawn in Python: no script, no font file, no network.

Only finite values become coordinates: a point whose value is nan or inf (or absurdly large) is left
out, so ``nan`` never reaches an SVG attribute. Text from the report goes through ``html.escape``.
Colours are presentation attributes, so a chart copied out of the page keeps them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from html import escape

from streams.domain.experiments.model import CumulativePoint, Estimate, MetricKind, Role

LIMIT = 1e12  # beyond this a value is left out like nan: the axis arithmetic stays finite
WIDTH, HEIGHT = 720, 320
LEFT, RIGHT, TOP, BOTTOM = 76, 20, 44, 56
BAND, LINE, ZERO, GRID, INK = "#bcd4ec", "#1f5fa8", "#555555", "#e4e4e4", "#333333"


def plottable(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and abs(x) < LIMIT


@dataclass(frozen=True)
class Scale:
    """Maps [lo, hi] (lo < hi) linearly onto [start, end] pixels."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, v: float) -> float:
        return self.start + (v - self.lo) / (self.hi - self.lo) * (self.end - self.start)


def nice_ticks(values: Sequence[float], count: int = 5) -> tuple[list[float], int]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``values``, and the
    decimals their labels need."""
    lo, hi = min(values), max(values)
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi), 1e-300):
        pad = abs(lo) * 0.5 if lo else 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if raw <= m * power)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [i * step for i in range(first, last + 1)], decimals


def _tick(t: float, decimals: int, suffix: str = "") -> str:
    text = f"{t:+.{decimals}f}"
    return ("0" if float(text) == 0 else text) + suffix


def _n(v: float) -> str:
    return f"{v:.1f}"


def _text(x: float, y: float, body: str, cls: str, anchor: str = "middle", extra: str = "") -> str:
    if cls == "axis-label":
        extra += ' font-size="13"'
    return f'<text class="{cls}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(body)}</text>'


def _frame(svg_id: str, height: int, title: str) -> list[str]:
    return [
        f'<svg id="{svg_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}"'
        f' height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _text(WIDTH / 2, 22, title, "chart-title", extra=' font-size="15" font-weight="bold"'),
    ]


def _y_axis(ticks: list[float], decimals: int, ys: Scale, x0: float, x1: float, suffix: str) -> list[str]:
    out = ['<g class="y-axis" font-size="11">']
    for t in ticks:
        y = _n(ys(t))
        out.append(f'<line x1="{_n(x0)}" x2="{_n(x1)}" y1="{y}" y2="{y}" stroke="{GRID}"/>')
        out.append(_text(x0 - 6, ys(t) + 4, _tick(t, decimals, suffix), "tick", "end"))
    return [*out, "</g>"]


def cumulative_lift(points: Sequence[CumulativePoint], kind: MetricKind, kpi: str, ci: str) -> str | None:
    """The primary KPI's cumulative absolute lift by day with its CI as a band; None without a finite
    point to draw."""
    drawn = sorted((p for p in points if plottable(p.absolute_lift)), key=lambda p: p.day)
    if not drawn:
        return None
    unit, suffix = (100.0, " pp") if kind is MetricKind.PROPORTION else (1.0, "")
    banded = [p for p in drawn if plottable(p.ci_low) and plottable(p.ci_high)]
    day0 = drawn[0].day
    span = (drawn[-1].day - day0).days
    xs = Scale(0, span, LEFT, WIDTH - RIGHT) if span else Scale(-1, 1, LEFT, WIDTH - RIGHT)
    values = [0.0] + [p.absolute_lift * unit for p in drawn]
    values += [v * unit for p in banded for v in (p.ci_low, p.ci_high)]
    ticks, decimals = nice_ticks(values)
    ys = Scale(ticks[0], ticks[-1], HEIGHT - BOTTOM, TOP)

    def x(p: CumulativePoint) -> float:
        return xs((p.day - day0).days)

    out = _frame("cumulative-lift", HEIGHT, f"Cumulative lift of the primary KPI ({kpi}) over time")
    out += _y_axis(ticks, decimals, ys, LEFT, WIDTH - RIGHT, suffix)
    out.append('<g class="x-axis" font-size="11">')
    bottom = HEIGHT - BOTTOM
    out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{bottom}" y2="{bottom}" stroke="{INK}"/>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{bottom}" stroke="{INK}"/>')
    for d in range(0, span + 1, max(1, math.ceil(span / 6))):
        tx = _n(xs(d))
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{bottom}" y2="{bottom + 5}" stroke="{INK}"/>')
        out.append(_text(xs(d), bottom + 18, (day0 + timedelta(days=d)).isoformat(), "tick"))
    out.append("</g>")
    if len(banded) > 1:
        upper = [f"{_n(x(p))},{_n(ys(p.ci_high * unit))}" for p in banded]
        lower = [f"{_n(x(p))},{_n(ys(p.ci_low * unit))}" for p in reversed(banded)]
        band = "M" + " L".join(upper + lower) + " Z"
    elif banded:  # one day: a narrow bar, so the interval still shows
        p = banded[0]
        left, right, hi, lo = _n(x(p) - 5), _n(x(p) + 5), _n(ys(p.ci_high * unit)), _n(ys(p.ci_low * unit))
        band = f"M{left},{hi} L{right},{hi} L{right},{lo} L{left},{lo} Z"
    else:
        band = ""
    if band:
        out.append(f'<path class="ci-band" d="{band}" fill="{BAND}" stroke="none"/>')
    zero = _n(ys(0.0))
    out.append(
        f'<line class="zero-line" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{zero}" y2="{zero}"'
        f' stroke="{ZERO}" stroke-width="1.5" stroke-dasharray="5 4"/>'
    )
    line = "M" + " L".join(f"{_n(x(p))},{_n(ys(p.absolute_lift * unit))}" for p in drawn)
    out.append(
        f'<path class="lift-line" d="{line}" fill="none" stroke="{LINE}" stroke-width="2.5"'
        ' stroke-linejoin="round"/>'
    )
    if len(drawn) <= 45:
        out.append(f'<g class="lift-points" fill="{LINE}">')
        out += [f'<circle cx="{_n(x(p))}" cy="{_n(ys(p.absolute_lift * unit))}" r="3"/>' for p in drawn]
        out.append("</g>")
    axis = "absolute lift, percentage points" if unit != 1.0 else "absolute lift (treatment - control)"
    out.append(_text(WIDTH / 2 + LEFT / 2, HEIGHT - 10, "day (persons exposed up to that day)", "axis-label"))
    mid = _n((TOP + HEIGHT - BOTTOM) / 2)
    out.append(_text(0, 0, axis, "axis-label", extra=f' transform="translate(16,{mid}) rotate(-90)"'))
    out += _legend([(f'<rect width="14" height="10" fill="{BAND}"/>', ci), _LINE_SWATCH], WIDTH - RIGHT)
    return "\n".join([*out, "</svg>"])


_LINE_SWATCH = (f'<line x1="0" x2="14" y1="5" y2="5" stroke="{LINE}" stroke-width="2.5"/>', "lift")


def _legend(items: list[tuple[str, str]], right: float) -> list[str]:
    out = ['<g class="legend" font-size="11">']
    x = right - 110 * len(items)
    for swatch, label in items:
        out.append(f'<g transform="translate({_n(x)},30)">{swatch}')
        out.append(_text(20, 9, label, "legend-label", "start") + "</g>")
        x += 110
    return [*out, "</g>"]


def forest(estimates: Sequence[Estimate], ci: str) -> str | None:
    """Every estimate's relative lift with its CI, one row each; None when none has a relative lift."""
    rows = [e for e in estimates if e.relative_lift is not None and plottable(e.relative_lift)]
    if not rows:
        return None
    left, row_h = 250, 28
    height = TOP + row_h * len(rows) + BOTTOM
    values = [0.0]
    for e in rows:
        values += [
            v * 100 for v in (e.relative_lift, *(e.relative_ci or ())) if v is not None and plottable(v)
        ]
    ticks, decimals = nice_ticks(values)
    xs = Scale(ticks[0], ticks[-1], left, WIDTH - RIGHT)
    bottom = TOP + row_h * len(rows)
    out = _frame("relative-lift-forest", height, f"Relative lift per KPI, {ci}")
    out.append('<g class="x-axis" font-size="11">')
    for t in ticks:
        tx = _n(xs(t))
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{TOP}" y2="{bottom}" stroke="{GRID}"/>')
        out.append(_text(xs(t), bottom + 16, _tick(t, decimals, "%"), "tick"))
    out.append("</g>")
    zero = _n(xs(0.0))
    out.append(
        f'<line class="zero-line" x1="{zero}" x2="{zero}" y1="{TOP}" y2="{bottom}" stroke="{ZERO}"'
        ' stroke-width="1.5" stroke-dasharray="5 4"/>'
    )
    for i, e in enumerate(rows):
        out += _forest_row(e, TOP + row_h * (i + 0.5), xs, left)
    out.append(
        _text(
            (left + WIDTH - RIGHT) / 2, height - 12, "relative lift (treatment / control - 1)", "axis-label"
        )
    )
    hollow = f'<circle cx="7" cy="5" r="4.5" fill="white" stroke="{LINE}" stroke-width="1.5"/>'
    if any(e.role is Role.EXPLORATORY for e in rows):
        out += _legend([(hollow, "exploratory")], WIDTH - RIGHT)
    return "\n".join([*out, "</svg>"])


def _forest_row(e: Estimate, y: float, xs: Scale, left: int) -> list[str]:
    assert e.relative_lift is not None
    lift = e.relative_lift * 100
    low, high = e.relative_ci or (math.nan, math.nan)
    lo = low * 100 if plottable(low) else lift
    hi = high * 100 if plottable(high) else lift
    exploratory = e.role is Role.EXPLORATORY
    limit = 20 if exploratory else 34
    name = e.kpi if len(e.kpi) <= limit else e.kpi[: limit - 1] + "\u2026"
    label = f"{name} (exploratory)" if exploratory else name
    style = ' font-style="italic" fill="#666666"' if exploratory else ""
    fill = "white" if exploratory else LINE
    return [
        f'<g class="forest-row role-{e.role.value}">',
        f"<title>{escape(e.kpi)}</title>",
        _text(left - 10, y + 4, label, "forest-label", "end", f' font-size="12"{style}'),
        f'<line class="forest-ci" x1="{_n(xs(lo))}" x2="{_n(xs(hi))}" y1="{_n(y)}" y2="{_n(y)}"'
        f' stroke="{LINE}" stroke-width="2"/>',
        f'<circle class="forest-point" cx="{_n(xs(lift))}" cy="{_n(y)}" r="4.5" fill="{fill}"'
        f' stroke="{LINE}" stroke-width="1.5"/>',
        "</g>",
    ]
