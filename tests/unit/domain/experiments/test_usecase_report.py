"""A report assembled from the arms' sums: roles fixed by the registration, the cumulative lift, the
plan's power, and its text."""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime

import yaml

from streams.domain.experiments.kpis import USECASE_KPIS
from streams.domain.experiments.model import Arm, Role
from streams.domain.experiments.outcomes import ArmDay
from streams.domain.experiments.report import build
from streams.domain.experiments.usecases import load_usecases
from streams.reports.usecase_text import render_text

DEFINITION = {
    "id": "shoes-reminder",
    "hypothesis": "Reminders make <b>shoe browsers</b> buy more within two weeks.",
    "audience": "browsed",
    "channels": ["email"],
    "primary_kpi": "conversion_rate",
    "guardrail_kpis": ["return_rate"],
    "minimum_detectable_effect": 0.2,
}


def day(arm: Arm, d: int, persons: int, converted: int) -> ArmDay:
    revenue = converted * 50.0
    return ArmDay(
        arm, date(2026, 3, d), persons, converted, revenue, converted * 2500.0, converted, converted,
        revenue, converted * 2500.0, revenue, converted // 10, 0, persons // 2,
    )  # fmt: skip


def test_a_report_orders_and_labels_the_kpis_and_accumulates_the_primary() -> None:
    (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    days = [
        day(Arm.CONTROL, 1, 100, 10), day(Arm.TREATMENT, 1, 900, 130),
        day(Arm.CONTROL, 2, 110, 12), day(Arm.TREATMENT, 2, 990, 150),
    ]  # fmt: skip
    at = datetime(2026, 3, 1, tzinfo=UTC)
    report = build(usecase, 1, at, None, days, contaminated=3, generated_at=at)
    assert [e.kpi for e in report.estimates][:2] == ["conversion_rate", "return_rate"]
    assert [e.role for e in report.estimates][:2] == [Role.PRIMARY, Role.GUARDRAIL]
    assert {e.role for e in report.estimates[2:]} == {Role.EXPLORATORY}
    assert len(report.estimates) == len(USECASE_KPIS)
    control, treatment = report.arms
    assert (control.persons, control.conversions, treatment.persons) == (210, 22, 1890)
    assert report.primary.control == 22 / 210 and report.primary.treatment == 280 / 1890
    assert [p.day for p in report.cumulative] == [date(2026, 3, 1), date(2026, 3, 2)]
    assert report.cumulative[-1].absolute_lift == report.primary.absolute_lift
    assert report.power.baseline == 22 / 210 and 0 < report.power.reached < 1
    assert report.sample_ratio.control == 210 and not report.sample_ratio.mismatch
    text = render_text(report)
    assert re.search(r"conversion_rate +primary", text)
    assert re.search(r"visit_rate +exploratory, not pre-registered", text)
    assert "SRM OK" in text and "Contaminated persons excluded: 3" in text
    assert "nan" not in text


def test_an_empty_report_renders_without_figures() -> None:
    (usecase,) = load_usecases([("uc.yaml", yaml.safe_dump(DEFINITION))])
    at = datetime(2026, 3, 1, tzinfo=UTC)
    report = build(usecase, 2, at, at, [], contaminated=0, generated_at=at)
    assert report.arms[0].persons == 0 and math.isnan(report.primary.p_value)
    assert report.cumulative == ()
    text = render_text(report)
    assert "nan" not in text and "SRM not checked" in text
