"""The use-case report as one self-contained HTML page (streams/reports/usecase_html.py, charts.py), on
hand-built reports. The SVG charts are parsed as XML and read back as numbers."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from datetime import date
from html.parser import HTMLParser

import pytest

from streams.domain.experiments.model import CumulativePoint, Role
from streams.reports import charts
from streams.reports.usecase_html import render_html
from tests.unit.reports.factory import cumulative, estimate, make_report, with_nans

NS = {"s": "http://www.w3.org/2000/svg"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def svg(page: str, svg_id: str) -> ET.Element:
    found = re.findall(rf'<svg id="{svg_id}".*?</svg>', page, re.DOTALL)
    assert len(found) == 1, f"{len(found)} svg#{svg_id}"
    return ET.fromstring(found[0])


def path_points(d: str) -> list[tuple[float, float]]:
    """The vertices of a path made of M, L and Z commands only."""
    assert re.fullmatch(r"M-?[\d.]+,-?[\d.]+( L-?[\d.]+,-?[\d.]+)*( Z)?", d), d
    values = [float(v) for v in NUMBER.findall(d)]
    return list(zip(values[::2], values[1::2], strict=True))


def one(root: ET.Element, css_class: str) -> ET.Element:
    found = [el for el in root.iter() if css_class in el.get("class", "").split()]
    assert len(found) == 1, f"{len(found)} .{css_class}"
    return found[0]


def texts(root: ET.Element) -> list[str]:
    return ["".join(el.itertext()) for el in root.iter(f"{{{NS['s']}}}text")]


class Tags(HTMLParser):
    """Every start tag with its attributes: what a browser would fetch or run."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_is_self_contained() -> None:
    page = render_html(make_report())
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    parser = Tags()
    parser.feed(page)
    names = [tag for tag, _ in parser.tags]
    assert "script" not in names and "link" not in names and "img" not in names and "iframe" not in names
    assert not [attrs for _, attrs in parser.tags if {"src", "href"} & set(attrs)]
    assert "url(" not in page and "@import" not in page
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"] * 2  # the xmlns only
    assert "default-src 'none'" in page  # the CSP: the browser may fetch nothing either


def test_user_text_is_escaped_everywhere() -> None:
    report = make_report(
        usecase_id="uc<i>",
        estimates=(estimate("<b>conv</b>", Role.PRIMARY), estimate("x&y", Role.EXPLORATORY)),
    )
    page = render_html(report)
    assert "<script>" not in page and "<b>" not in page and "<i>" not in page
    assert "A 10% voucher &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &quot;free&quot;" in page
    assert "&lt;b&gt;conv&lt;/b&gt;" in page and "uc&lt;i&gt;" in page
    forest = svg(page, "relative-lift-forest")  # parses as XML: the escaping kept it well formed
    assert "<b>conv</b>" in texts(forest) and "x&y (exploratory)" in texts(forest)
    assert "Cumulative lift of the primary KPI (<b>conv</b>) over time" in texts(svg(page, "cumulative-lift"))


def test_header_arms_estimates_srm_and_power() -> None:
    page = render_html(make_report())
    for field in (
        "<dt>Hypothesis</dt>",
        "<dd>lapsed_buyers (person)</dd>",
        "<dd>running</dd>",
        "<dd>50.0%</dd>",
    ):
        assert field in page
    arms = re.search(r'<tr class="arm-control">(.*?)</tr>', page)
    assert arms and re.findall(r">([^<>]+)</td>", arms.group(1)) == [
        "control", "11,200", "347", "3.10%", "1.87", "402", "52.22"
    ]  # fmt: skip
    primary = re.search(r'<tr class="estimate role-primary">(.*?)</tr>', page)
    assert primary
    cells = [re.sub(r"<br>", " ", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", primary.group(1))]
    assert [re.sub(r"<[^>]+>", "", c) for c in cells] == [
        "conversion", "primary", "3.10%", "3.52%", "+0.42 pp [+0.11 pp, +0.73 pp]",
        "+13.6% [+3.5%, +23.6%]", "0.008", "significant",
    ]  # fmt: skip
    assert '<span class="significant">significant</span>' in primary.group(1)
    assert '<p id="srm" class="badge srm-ok">SRM OK (p=0.43)</p>' in page
    assert "71.0% reached of 80% planned" in page and "Contaminated persons excluded: 12" in page


def test_exploratory_kpis_are_marked() -> None:
    page = render_html(make_report())
    row = re.search(r'<tr class="estimate role-exploratory">(.*?)</tr>', page)
    assert row and '<span class="tag exploratory">exploratory, not pre-registered</span>' in row.group(1)
    assert "tr.role-exploratory td" in page  # styled apart from the pre-registered rows
    rows = [g for g in svg(page, "relative-lift-forest").iter() if "forest-row" in g.get("class", "")]
    assert [r.get("class") for r in rows] == [
        "forest-row role-primary", "forest-row role-guardrail", "forest-row role-exploratory"
    ]  # fmt: skip
    assert "aov (exploratory)" in texts(rows[2])
    assert one(rows[2], "forest-point").get("fill") == "white"  # hollow, unlike the others


def test_srm_mismatch_badge() -> None:
    report = make_report()
    page = render_html(replace(report, sample_ratio=replace(report.sample_ratio, p_value=1e-6)))
    badge = re.search(r'<p id="srm" class="badge srm-mismatch">([^<]*)</p>', page)
    assert badge and badge.group(1) == "SAMPLE RATIO MISMATCH (p=1.0e-06): do not trust this report"


def test_cumulative_chart_draws_the_lift_its_band_zero_line_axes_and_title() -> None:
    chart = svg(render_html(make_report()), "cumulative-lift")
    line = path_points(one(chart, "lift-line").get("d", ""))
    assert len(line) == 14  # one vertex a day
    xs, ys = [x for x, _ in line], [y for _, y in line]
    assert xs == sorted(xs) and len(set(xs)) == 14  # time runs left to right
    assert ys == sorted(ys)  # the factory's lift falls day by day: on screen it goes down
    band = path_points(one(chart, "ci-band").get("d", ""))
    assert len(band) == 28  # upper edge out, lower edge back
    for (x, y), (bx, top), (bx2, bottom) in zip(line, band[:14], reversed(band[14:]), strict=True):
        assert x == bx == bx2 and top < y < bottom  # the lift inside its interval
    zero = one(chart, "zero-line")
    assert ys[-1] < float(zero.get("y1", "nan")) < float(band[14][1])  # CI low under zero, lift above
    labels = texts(chart)
    assert "Cumulative lift of the primary KPI (conversion) over time" in labels
    assert "absolute lift, percentage points" in labels and "day (persons exposed up to that day)" in labels
    assert {"2025-03-03", "2025-03-06", "0 pp", "+2 pp", "-2 pp"} <= set(labels)


def test_empty_or_all_nan_cumulative_says_not_enough_data() -> None:
    report = make_report()
    nan_points = tuple(replace(p, absolute_lift=math.nan) for p in report.cumulative)
    for points in ((), nan_points):
        page = render_html(replace(report, cumulative=points))
        assert 'id="cumulative-lift"' not in page
        assert "Cumulative lift of the primary KPI over time: not enough data yet." in page
        assert 'id="relative-lift-forest"' in page


def test_one_day_draws_a_point_and_a_bar_for_its_interval() -> None:
    chart = svg(render_html(make_report(cumulative=cumulative(1))), "cumulative-lift")
    assert len(path_points(one(chart, "lift-line").get("d", ""))) == 1
    band = path_points(one(chart, "ci-band").get("d", ""))
    assert len(band) == 4 and band[1][0] - band[0][0] == 10  # a 10 px wide bar
    assert len(list(one(chart, "lift-points"))) == 1


def test_nan_never_reaches_the_page_or_a_coordinate() -> None:
    report = with_nans(make_report())
    points = list(report.cumulative)
    points.append(CumulativePoint(date(2025, 3, 20), 1, 1, math.inf, -math.inf, math.nan))
    page = render_html(replace(report, cumulative=tuple(points)))
    assert not re.search(r"\bnan\b|\binf", page, re.IGNORECASE)
    for chart_id in ("cumulative-lift", "relative-lift-forest"):
        for el in svg(page, chart_id).iter():
            for name in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "d", "width", "height"):
                for v in NUMBER.findall(el.get(name, "")):
                    assert math.isfinite(float(v))
    chart = svg(page, "cumulative-lift")
    assert len(path_points(one(chart, "lift-line").get("d", ""))) == 13  # day 4 and the inf day left out
    assert len(path_points(one(chart, "ci-band").get("d", ""))) == 24  # and day 6 (its CI) too


def test_forest_skips_estimates_without_a_relative_lift() -> None:
    report = make_report()
    no_rel = replace(report.estimates[1], relative_lift=None, relative_ci=None)
    page = render_html(replace(report, estimates=(report.estimates[0], no_rel, report.estimates[2])))
    forest = svg(page, "relative-lift-forest")
    assert [g.get("class") for g in forest.iter() if "forest-row" in g.get("class", "")] == [
        "forest-row role-primary", "forest-row role-exploratory"
    ]  # fmt: skip
    nothing = replace(report, estimates=tuple(replace(e, relative_lift=None) for e in report.estimates))
    page = render_html(nothing)
    assert 'id="relative-lift-forest"' not in page and "no relative lift to plot yet" in page


def test_forest_point_sits_at_its_relative_lift_between_its_ci_ends() -> None:
    forest = svg(render_html(make_report()), "relative-lift-forest")
    rows = [g for g in forest.iter() if "forest-row" in g.get("class", "")]
    zero = float(one(forest, "zero-line").get("x1", "nan"))
    for row, sign in zip(rows, (1, 1, -1), strict=True):  # +13.6 %, +12.1 %, -0.9 %
        point, ci = one(row, "forest-point"), one(row, "forest-ci")
        x = float(point.get("cx", "nan"))
        assert float(ci.get("x1", "nan")) < x < float(ci.get("x2", "nan"))
        assert (x - zero) * sign > 0


@pytest.mark.parametrize(
    "values",
    [[0.0, 0.42, -1.9, 3.9], [0.0], [5.0, 5.0], [0.0, 1e-7, -3e-7], [-250.0, 0.0, 1234.5], [0.0, 99.99]],
)
def test_nice_ticks_cover_the_values_with_round_steps(values: list[float]) -> None:
    ticks, decimals = charts.nice_ticks(values)
    assert 2 <= len(ticks) <= 12
    assert ticks[0] <= min(values) and ticks[-1] >= max(values) and ticks[0] < ticks[-1]
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5, 10))
    labels = [f"{t:.{decimals}f}" for t in ticks]
    assert len(set(labels)) == len(labels)  # enough decimals to tell the ticks apart
