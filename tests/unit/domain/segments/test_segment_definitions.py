"""Loading segment definitions: every error names the file, the segment and the field; the canonical
JSON (and so the content hash) does not depend on how the YAML was written."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.segments.loader import DefinitionError, load_definitions
from streams.domain.segments.model import SegmentDefinition


def problems_of(*files: tuple[str, str]) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        load_definitions(files)
    return caught.value.problems


def test_bad_duration_error_reads_as_documented() -> None:
    """The example of docs/segments.md, word for word."""
    text = (
        "id: high-value\n"
        "when:\n  any:\n    - event: Order Completed\n      window: 3x\n      sum: {of: revenue, gte: 500}\n"
    )
    assert problems_of(("deploy/segments/x.yaml", text)) == [
        "deploy/segments/x.yaml: segment 'high-value': when.any[0].window: "
        "invalid duration '3x' (use 30d, 12h, 15m, 45s or 2w)"
    ]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("id: x\nwhen: {any: [{event: page, window: 3x}]}\n", "when.any[0].window", "invalid duration '3x'"),
        ("id: x\nwhen: {all: [{event: page, last: {within: soon}}]}\n", "when.all[0].last.within", "soon"),
        ("id: x\nwhen: {event: Order Completed, windw: 3d}\n", "when.windw", "not permitted"),
        (
            "id: x\nwhen: {not: {all: [{event: page}, {derived: lapse_ratio, gt: 1, wat: 1}]}}\n",
            "when.not.all[1].wat",
            "",
        ),
        ("id: x\nwhen: {all: [{trait: tier, event: page, eq: a}]}\n", "when.all[0]", "exactly one of"),
        ("id: x\nwhen: {any: [{}]}\n", "when.any[0]", "exactly one of"),
        ("id: x\nwhen: {trait: tier}\n", "when", "needs a comparison"),
        ("id: x\nwhen: {event: page, count: {gte: 1}, sum: {of: revenue, gte: 1}}\n", "when", "one measure"),
        ("id: x\nwhen: {event: page, window: 1d, last: {within: 1d}}\n", "when", "drop window"),
        ("id: x\nwhen: {context: {channel: [fax]}}\n", "when.context.channel[0]", "'web', 'app'"),
        ("id: x\nwhen: {derived: days_since_lunch, gt: 1}\n", "when.derived", "days_since_last_purchase"),
        ("id: x\nwhen: {trait: score, between: [5, 1]}\n", "when", "above upper bound"),
    ],
)
def test_condition_errors_name_file_segment_and_field(text: str, field: str, words: str) -> None:
    (problem,) = problems_of(("deploy/segments/bad.yaml", text))
    assert problem.startswith(f"deploy/segments/bad.yaml: segment 'x': {field}: "), problem
    assert words in problem


def test_segment_without_when_is_rejected_naming_when() -> None:
    (problem,) = problems_of(("a.yaml", "id: x\nkind: segment\n"))
    assert problem.startswith("a.yaml: segment 'x': ")
    assert "when: a segment needs a condition" in problem


def test_bad_id_is_named() -> None:
    (problem,) = problems_of(("a.yaml", "id: High Value\nwhen: {event: page}\n"))
    assert problem.startswith("a.yaml: segment 'High Value': id: ")
    assert "lower-case" in problem


def test_suppression_with_when_is_rejected_naming_when() -> None:
    (problem,) = problems_of(("a.yaml", "id: bought\nkind: suppression\nwhen: {event: page}\n"))
    assert problem.startswith("a.yaml: segment 'bought': ")
    assert "when: a suppression audience is defined by per and returns_exit" in problem


def test_duplicate_ids_across_files_name_both_files() -> None:
    problems = problems_of(
        ("a.yaml", "id: x\nwhen: {event: page}\n"), ("b.yaml", "- id: x\n  when: {event: page}\n")
    )
    assert problems == ["b.yaml: segment 'x': id 'x' is already defined in a.yaml"]


def test_unknown_segment_reference() -> None:
    assert problems_of(("a.yaml", "id: x\nwhen: {not: {segment: nope}}\n")) == [
        "a.yaml: segment 'x': when: refers to unknown segment 'nope'"
    ]


def test_reference_to_a_suppression_audience_is_rejected() -> None:
    (problem,) = problems_of(("a.yaml", "- id: ap\n  kind: suppression\n- id: x\n  when: {segment: ap}\n"))
    assert problem.startswith("a.yaml: segment 'x': when: refers to 'ap', a per-product suppression audience")


def test_reference_cycle_names_the_segments_and_their_files() -> None:
    problems = problems_of(
        ("a.yaml", "id: x\nwhen: {segment: y}\n"),
        ("b.yaml", "id: y\nwhen: {any: [{event: page}, {not: {segment: x}}]}\n"),
    )
    assert len(problems) == 1
    # the spec: each error names the file, the segment and the field
    assert problems[0].startswith("a.yaml: segment 'x': when: "), problems[0]
    assert "cycle" in problems[0] and "b.yaml" in problems[0], problems[0]


def test_loading_is_all_or_nothing_and_reports_every_problem() -> None:
    problems = problems_of(
        ("good.yaml", "id: fine\nwhen: {event: page}\n"),
        ("bad.yaml", "- id: one\n  when: {event: page, window: 0d}\n- id: two\n  when: {trait: t}\n"),
        ("broken.yaml", "id: [\n"),
        ("list.yaml", "- 3\n"),
    )
    assert [p.split(":")[0] for p in problems] == ["bad.yaml", "bad.yaml", "broken.yaml", "list.yaml"]
    assert "segment 'one': when.window:" in problems[0]
    assert "segment 'two': when:" in problems[1]
    assert "not valid YAML" in problems[2]
    assert "definition #1: expected a mapping" in problems[3]


def test_file_forms_one_list_or_segments_key() -> None:
    loaded = load_definitions(
        [
            ("one.yaml", "id: a\nwhen: {event: page}\n"),
            ("list.yaml", "- id: b\n  when: {event: page}\n- id: c\n  kind: suppression\n"),
            ("key.yaml", "segments:\n  - id: d\n    when: {segment: a}\n"),
        ]
    )
    assert [d.id for d in loaded] == ["a", "b", "c", "d"]


# -- canonical JSON and content hash -------------------------------------------------------------

HIGH_VALUE = {
    "id": "high-value",
    "name": "High value customers",
    "personalised": True,
    "when": {
        "any": [
            {
                "event": "Order Completed",
                "window": "365d",
                "channel": ["web", "store"],
                "where": {"coupon": {"ne": "staff"}, "properties.order.total": {"gte": 10}},
                "sum": {"of": "revenue", "gte": 500},
            },
            {"trait": "loyalty_tier", "in": ["gold", "platinum"]},
            {"not": {"derived": "lapse_ratio", "gt": 1.5}},
        ]
    },
}


def _shuffled(value: object, draw: st.DrawFn) -> object:
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        return {key: _shuffled(value[key], draw) for key in keys}
    if isinstance(value, list):
        return [_shuffled(item, draw) for item in value]
    return value


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_canonical_json_and_hash_do_not_depend_on_key_order(data: st.DataObject) -> None:
    reference = SegmentDefinition.model_validate(HIGH_VALUE)
    variant = SegmentDefinition.model_validate(_shuffled(HIGH_VALUE, data.draw))
    assert variant.canonical_json() == reference.canonical_json()
    assert variant.content_hash() == reference.content_hash()


def test_equal_durations_hash_alike_and_survive_the_topic() -> None:
    a = SegmentDefinition.model_validate({"id": "r", "when": {"event": "page", "window": "1d"}})
    b = SegmentDefinition.model_validate({"id": "r", "when": {"event": "page", "window": "24h"}})
    c = SegmentDefinition.model_validate({"id": "r", "when": {"event": "page", "window": 86400}})
    assert a.content_hash() == b.content_hash() == c.content_hash()
    # what the definitions topic carries reads back to the same definition
    again = SegmentDefinition.model_validate(json.loads(a.canonical_json()))
    assert again == a and again.canonical_json() == a.canonical_json()
    high = SegmentDefinition.model_validate(HIGH_VALUE)
    assert SegmentDefinition.model_validate(json.loads(high.canonical_json())) == high
    assert '"in":["gold","platinum"]' in high.canonical_json()


def test_yaml_written_differently_loads_to_the_same_hash() -> None:
    flow = "id: x\nwhen: {all: [{event: [page, screen], window: 2w}, {trait: tier, eq: gold}]}\n"
    block = (
        "when:\n  all:\n    - window: 14d\n      event:\n        - page\n        - screen\n"
        "    - eq: gold\n      trait: tier\nid: x\n"
    )
    (one,) = load_definitions([("flow.yaml", flow)])
    (two,) = load_definitions([("block.yaml", block)])
    assert one.content_hash() == two.content_hash()


def test_a_change_changes_the_hash() -> None:
    base = SegmentDefinition.model_validate(HIGH_VALUE)
    changed = json.loads(json.dumps(HIGH_VALUE))
    changed["when"]["any"][0]["sum"]["gte"] = 501
    assert SegmentDefinition.model_validate(changed).content_hash() != base.content_hash()
