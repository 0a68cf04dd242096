"""The use-case report as terminal text (streams/reports/usecase_text.py), on hand-built reports."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from streams.domain.experiments.model import Role
from streams.reports import formatting as fmt
from streams.reports.usecase_text import render_text
from tests.unit.reports.factory import HYPOTHESIS, make_report, with_nans


def line_with(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_header_names_the_use_case_and_its_plan() -> None:
    text = render_text(make_report())
    assert text.startswith("Use-case report: winback-voucher v3\n")
    assert line_with(text, "Hypothesis:").endswith(HYPOTHESIS)
    assert line_with(text, "Audience:").endswith("lapsed_buyers (person)")
    assert line_with(text, "Started:").endswith("2025-03-03 09:00+00:00")
    assert line_with(text, "Stopped:").endswith("running")
    assert line_with(text, "Attribution window:").endswith("7 days")
    assert line_with(text, "Control share:").endswith("50.0%")
    stopped = render_text(make_report(stopped_at=datetime(2025, 3, 20, 18, 5, tzinfo=UTC)))
    assert line_with(stopped, "Stopped:").endswith("2025-03-20 18:05+00:00")


def test_arms_table_has_rates_as_percent_and_money_with_two_decimals() -> None:
    text = render_text(make_report())
    header = line_with(text, "arm ")
    assert header.split() == [
        "arm",
        "persons",
        "conversions",
        "conv.",
        "rate",
        "revenue/person",
        "orders",
        "AOV",
    ]
    assert line_with(text, "control ").split() == [
        "control",
        "11,200",
        "347",
        "3.10%",
        "1.87",
        "402",
        "52.22",
    ]
    assert line_with(text, "treatment ").split() == [
        "treatment",
        "11,207",
        "395",
        "3.52%",
        "2.10",
        "455",
        "51.72",
    ]


def test_one_line_per_estimate_with_lifts_cis_p_and_verdict() -> None:
    text = render_text(make_report())
    primary = line_with(text, "conversion ")
    for part in (
        "primary",
        "3.10%",
        "3.52%",
        "+0.42 pp [+0.11 pp, +0.73 pp]",
        "+13.6% [+3.5%, +23.6%]",
        "0.008",
    ):
        assert part in primary
    assert primary.endswith(" significant") and "not significant" not in primary
    guardrail = line_with(text, "revenue_per_person ")
    assert "guardrail" in guardrail and "+0.23 [-0.05, +0.50]" in guardrail
    assert guardrail.endswith("not significant")
    assert "exploratory, not pre-registered" in line_with(text, "aov ")
    assert "(treatment - control, 95% CI)" in text


def test_relative_lift_is_a_dash_when_control_is_zero() -> None:
    report = make_report()
    zero = replace(report.estimates[1], control=0.0, relative_lift=None, relative_ci=None)
    line = line_with(
        render_text(replace(report, estimates=(report.estimates[0], zero))), "revenue_per_person "
    )
    assert "%" not in line  # a mean KPI: only the relative lift would be a percentage
    assert re.search(r"\+0\.23 \[-0\.05, \+0\.50\]\s+-\s+0\.11", line), line


def test_srm_power_and_contamination_lines() -> None:
    text = render_text(make_report())
    assert "\nSRM OK (p=0.43)\n" in text
    assert "71.0% reached of 80% planned" in text
    assert "needed 14,000 control / 14,000 treatment, have 11,200 (80%) / 11,207 (80%)" in text
    assert line_with(text, "Contaminated persons excluded:").endswith(": 12")
    bad = make_report(sample_ratio=replace(make_report().sample_ratio, treatment=12000, p_value=2e-7))
    assert "\nSAMPLE RATIO MISMATCH (p=2.0e-07): do not trust this report\n" in render_text(bad)


def test_nan_and_inf_never_show() -> None:
    text = render_text(with_nans(make_report()))
    assert not re.search(r"\bnan\b|\binf\b", text, re.IGNORECASE)
    assert line_with(text, "conversion ").split()[-2:] == ["-", "-"]  # no p-value, no verdict
    assert line_with(text, "control ").split() == ["control", "11,200", "347", "-", "1.87", "402", "-"]
    assert "SRM not checked (p=-)" in text
    assert "Power of conversion: - reached" in text


def test_control_characters_in_user_text_cannot_drive_the_terminal() -> None:
    text = render_text(make_report(hypothesis="red \x1b[31malert\x07\nsecond line", audience="a\rb"))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    first = line_with(text, "Hypothesis:")
    indent = len(first) - len(first.split(":", 1)[1].lstrip())
    assert f"\n{' ' * indent}second line\n" in text  # a multi-line hypothesis stays in its column


def test_without_estimates_or_cumulative_points_the_report_still_renders() -> None:
    text = render_text(make_report(estimates=(), cumulative=()))
    assert "  no estimates" in text
    assert "Power: " in text  # no primary KPI to name


@pytest.mark.parametrize(
    ("p", "shown"),
    [
        (0.43, "0.43"),
        (0.05, "0.05"),
        (0.0081, "0.008"),
        (0.00004, "4.0e-05"),
        (math.nan, "-"),
        (math.inf, "-"),
    ],
)
def test_p_values(p: float, shown: str) -> None:
    assert fmt.p_value(p) == shown


def test_every_role_has_its_label() -> None:
    assert fmt.ROLE_LABELS[Role.EXPLORATORY] == "exploratory, not pre-registered"
    assert set(fmt.ROLE_LABELS) == set(Role)
