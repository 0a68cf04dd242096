"""The HTML report: self-contained, escaped, both charts drawn from the figures, nothing undefined
drawn or printed as nan."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from streams.domain.experiments.report import build
from streams.reports.usecase_html import render_html
from tests.unit.reports.report_factory import DEFINITION, sample_report


def test_the_page_is_self_contained_and_escapes_the_hypothesis() -> None:
    page = render_html(sample_report())
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"(src|href)=", page)  # nothing fetched
    assert "nan" not in page.lower().replace("nancy", "")
    assert "SRM OK" in page and "Contaminated persons excluded: 2" in page
    assert "exploratory, not pre-registered" in page


def test_the_cumulative_chart_has_a_line_and_a_band_per_day() -> None:
    report = sample_report(days=12)
    page = render_html(report)
    line = re.search(r'<path class="lift-line" d="([^"]+)"', page)
    band = re.search(r'<polygon class="ci-band" points="([^"]+)"', page)
    assert line and band
    assert line.group(1).count("L") == len(report.cumulative) - 1
    assert len(band.group(1).split()) == 2 * len(report.cumulative)
    assert 'id="kpi-lifts"' in page and page.count('class="kpi-interval"') >= 3


def test_an_empty_report_says_so_instead_of_a_chart() -> None:
    import yaml

    from streams.domain.experiments.usecases import load_usecases

    (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    page = render_html(build(usecase, 1, at, None, [], contaminated=0, generated_at=at))
    assert 'id="cumulative-lift-empty"' in page and 'id="cumulative-lift"' not in page
    assert "nan" not in page.lower()
