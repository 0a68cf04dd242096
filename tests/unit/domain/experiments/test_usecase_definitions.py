"""Use case definitions: validated all or nothing, problems naming file and field, a checksum of the
registered fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streams.domain.experiments.usecases import REGISTERED_FIELDS, UseCaseError, load_usecases
from streams.domain.yaml_documents import read_dir

DEPLOY = Path(__file__).resolve().parents[4] / "deploy"
SEGMENTS = {"browsed-shoes-not-bought": "segment", "already-purchased": "suppression"}

GOOD = """
id: shoes-reminder
hypothesis: A browse reminder raises the share of shoe browsers who buy within 14 days.
audience: browsed-shoes-not-bought
channels: [email, ads]
primary_kpi: conversion_rate
guardrail_kpis: [return_rate, aov]
minimum_detectable_effect: 0.1
"""


def problems(text: str, segments: dict[str, str] | None = SEGMENTS) -> list[str]:
    with pytest.raises(UseCaseError) as caught:
        load_usecases([("uc.yaml", text)], segments=segments)
    return caught.value.problems


def test_a_good_definition_gets_the_defaults() -> None:
    (usecase,) = load_usecases([("uc.yaml", GOOD)], segments=SEGMENTS)
    assert usecase.audience.segment == "browsed-shoes-not-bought" and usecase.audience.subject is None
    assert usecase.control_share == 0.10 and usecase.attribution_window_days == 14
    assert usecase.significance == 0.05 and usecase.power == 0.8
    assert usecase.kpis() == ["conversion_rate", "return_rate", "aov"]


def test_the_shipped_examples_are_valid() -> None:
    from streams.domain.segments.loader import load_definitions

    segments = {d.id: d.kind for d in load_definitions(read_dir(DEPLOY / "segments", what="segment"))}
    usecases = load_usecases(read_dir(DEPLOY / "usecases", what="use case"), segments=segments)
    assert usecases


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"primary_kpi": "happiness"},
            "uc.yaml: use case 'shoes-reminder': primary_kpi: unknown KPI 'happiness'",
        ),
        ({"control_share": 0.01}, "control_share: Input should be greater than or equal to 0.05"),
        ({"control_share": 0.9}, "control_share: Input should be less than or equal to 0.5"),
        ({"audience": "nobody"}, "audience.segment: unknown segment 'nobody'"),
        ({"audience": "already-purchased"}, "audience.subject: 'already-purchased' is a per-product"),
        ({"audience": {"segment": "browsed-shoes-not-bought", "subject": "product:1"}}, "remove subject"),
        ({"channels": ["fax"]}, "channels: Value error, unknown channel 'fax'".replace("Value error, ", "")),
        ({"guardrail_kpis": ["conversion_rate"]}, "is the primary KPI"),
        ({"hypothesis": "it works"}, "hypothesis: String should have at least 20 characters"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"minimum_detectable_effect": 0}, "minimum_detectable_effect: Input should be greater than 0"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], expected: str) -> None:
    raw = yaml.safe_load(GOOD) | change
    lines = problems(yaml.safe_dump(raw))
    assert any(expected in line for line in lines), lines
    assert all(line.startswith("uc.yaml: use case 'shoes-reminder': ") for line in lines)


def test_all_or_nothing_over_files_and_duplicates() -> None:
    with pytest.raises(UseCaseError) as caught:
        load_usecases([("a.yaml", GOOD), ("b.yaml", GOOD), ("c.yaml", "id: [")], segments=SEGMENTS)
    lines = caught.value.problems
    assert any("b.yaml" in line and "already defined in a.yaml" in line for line in lines)
    assert any(line.startswith("c.yaml: not valid YAML") for line in lines)


def test_the_checksum_covers_exactly_the_registered_fields() -> None:
    (base,) = load_usecases([("uc.yaml", GOOD)])
    assert (
        base.checksum()
        == load_usecases([("uc.yaml", GOOD + "name: Shoes\nchannels: [email]\n")])[0].checksum()
    )
    changes = {
        "hypothesis": "Another hypothesis, long enough to count.",
        "audience": "already-purchased",
        "primary_kpi": "revenue_per_person",
        "guardrail_kpis": ["return_rate"],
        "attribution_window_days": 7,
        "control_share": 0.2,
        "significance": 0.01,
        "minimum_detectable_effect": 0.2,
        "power": 0.9,
    }
    assert set(changes) == set(REGISTERED_FIELDS)
    for field, value in changes.items():
        (changed,) = load_usecases([("uc.yaml", yaml.safe_dump(yaml.safe_load(GOOD) | {field: value}))])
        assert changed.checksum() != base.checksum(), field
        assert changed.changed_fields(base.registration()) == [field]


def test_whitespace_in_the_hypothesis_does_not_change_the_registration() -> None:
    (a,) = load_usecases([("uc.yaml", GOOD)])
    reflowed = yaml.safe_dump(yaml.safe_load(GOOD) | {"hypothesis": a.hypothesis.replace(" ", "\n  ")})
    assert load_usecases([("uc.yaml", reflowed)])[0].checksum() == a.checksum()
