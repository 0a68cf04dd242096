"""Property tests: SegmentEngine against the naive reference model on random definitions and streams.

Times sit on an hour grid (with an occasional even jitter) so that window edges, ``first``/``last``
spans and derived-trait thresholds are hit exactly; events arrive late, early (future-dated) and twice.
After every step the engine's membership must equal the reference recomputed from scratch at that
moment; the changes must alternate per (segment, subject) and replay to the membership.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

from streams.domain.catalog import Catalog, Product
from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.profile import Profile
from tests.unit.domain.segments.segments_reference import SEP, ReferenceSegments

H = 3_600_000
BASE = 1_704_067_200_000  # 2024-01-01T00:00Z, a Monday
NAMES = ["Order Completed", "Order Refunded", "Product Viewed", "identify", "page"]
CHANNELS = ["web", "app", "email", "store"]
CATALOG = Catalog.of(
    [
        Product(
            "p1",
            category="shoes",
            brand="acme",
            price=10.0,
            web_skus=("S1",),
            app_product_ids=("A1",),
            eans=("4006381333931",),
        ),
        Product("p2", category="Shoes", brand="ZETA", price=20.0, web_skus=("S2",)),
        Product("p3", category="hats", brand="acme", web_skus=("S3",), app_product_ids=("A3",)),
    ]
)
PROPERTY_TESTS = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

# -- definitions ---------------------------------------------------------------------------------

small = st.sampled_from([0, 1, 2, 3])
amounts = st.sampled_from([0, 5, 10, 20, 30, 42.5])


@st.composite
def event_leaf(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.sampled_from([["Order Completed"], ["Product Viewed"], ["page"], ["identify"]]))
    if draw(st.integers(0, 4)) == 0:
        names = [*names, draw(st.sampled_from(NAMES))]
    leaf: dict[str, Any] = {"event": names if len(set(names)) > 1 else names[0]}
    if draw(st.integers(0, 3)) == 0:
        leaf["channel"] = draw(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 5)) == 0:
        leaf["device_type"] = [draw(st.sampled_from(["mobile", "tablet", "desktop", "other"]))]
    if draw(st.integers(0, 6)) == 0:
        leaf["local_hour"] = {"gte": draw(st.integers(0, 23))}
    if draw(st.integers(0, 4)) == 0:
        leaf["where"] = draw(
            st.sampled_from(
                [{"coupon": {"eq": "spring"}}, {"amount": {"gte": 2}}, {"properties.coupon": {"ne": "vip"}}]
            )
        )
    if draw(st.integers(0, 3)) == 0:
        leaf["product"] = draw(
            st.sampled_from(
                [
                    {"category": ["shoes"]},
                    {"id": ["p1", "sku:S9"]},
                    {"brand": "acme"},
                    {"brand": ["Zeta"], "category": "SHOES"},
                    {"id": ["p3"]},
                ]
            )
        )
    measure = draw(st.sampled_from(["none", "count", "count", "sum", "min", "max", "first", "last"]))
    if measure in ("first", "last"):
        span = draw(st.sampled_from(["1d", "2d", "36h"]))
        leaf[measure] = {draw(st.sampled_from(["within", "older_than"])): span}
        return leaf
    if draw(st.booleans()):
        leaf["window"] = draw(st.sampled_from(["2h", "1d", "3d", "30h"]))
    if measure == "count":
        leaf["count"] = {draw(st.sampled_from(["gte", "gte", "lt", "eq"])): draw(small)}
    elif measure in ("sum", "min", "max"):
        of = draw(st.sampled_from(["revenue", "quantity", "amount"]))
        op = draw(st.sampled_from(["gte", "lte", "gt", "lt"]))
        leaf[measure] = {"of": of, op: draw(amounts)}
    return leaf


trait_leaf = st.sampled_from(
    [
        {"trait": "tier", "in": ["gold", "platinum"]},
        {"trait": "tier", "eq": "Silver"},
        {"trait": "tier", "ne": "gold"},
        {"trait": "tier", "exists": False},
        {"trait": "score", "gte": 3},
        {"trait": "address.city", "eq": "paris"},
    ]
)


@st.composite
def derived_leaf(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(
        st.sampled_from(
            [
                "days_since_last_purchase",
                "days_since_first_seen",
                "purchase_count",
                "lifetime_revenue",
                "lapse_ratio",
                "preferred_channel",
                "preferred_category",
                "preferred_hour",
                "purchase_interval_days",
            ]
        )
    )
    if name == "preferred_channel":
        return {"derived": name, "eq": draw(st.sampled_from(CHANNELS))}
    if name == "preferred_category":
        return {"derived": name, "in": ["hats"]}
    if name == "preferred_hour":
        return {"derived": name, "between": [8, 17]}
    op = draw(st.sampled_from(["gt", "gte", "lt", "lte"]))
    if name == "lapse_ratio":
        return {"derived": name, op: draw(st.sampled_from([0.5, 1, 1.5, 2.25]))}
    if name in ("purchase_count", "lifetime_revenue"):
        return {"derived": name, op: draw(amounts if name == "lifetime_revenue" else small)}
    return {"derived": name, op: draw(st.sampled_from([0.5, 1, 2, 3]))}


context_leaf = st.sampled_from(
    [
        {"context": {"channel": ["web", "app"]}},
        {"context": {"channel": "store"}},
        {"context": {"device_type": ["mobile"]}},
        {"context": {"local_hour": {"gte": 12}}},
        {"context": {"weekday": ["sat", "sun"]}},
        {"context": {"season": ["winter"], "channel": ["web"]}},
    ]
)


def conditions(refs: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    leaves = [event_leaf(), event_leaf(), trait_leaf, derived_leaf(), context_leaf]
    if refs:
        leaves.append(st.sampled_from(refs).map(lambda ref: {"segment": ref}))
    return st.recursive(
        st.one_of(*leaves),
        lambda inner: st.one_of(
            inner.map(lambda c: {"not": c}),
            st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"all": cs}),
            st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"any": cs}),
        ),
        max_leaves=4,
    )


@st.composite
def definition_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    raw: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 4))):
        when = draw(conditions([d["id"] for d in raw]))
        raw.append({"id": f"s{index}", "when": when})
    for index in range(draw(st.integers(0, 2))):
        raw.append(
            {
                "id": f"sup{index}",
                "kind": "suppression",
                "per": draw(st.sampled_from(["product", "category"])),
                "returns_exit": draw(st.booleans()),
            }
        )
    return raw


def validated(raw: list[dict[str, Any]]) -> list[SegmentDefinition]:
    return [SegmentDefinition.model_validate(d) for d in raw]


# -- events --------------------------------------------------------------------------------------

line_ids = st.sampled_from(
    [
        {"sku": "S1"},
        {"ean": "04006381333931"},
        {"app_product_id": "A1"},
        {"sku": "S2"},
        {"sku": "S3"},
        {"sku": "S9"},
        {"ean": "96385074"},
    ]
)


@st.composite
def line_items(draw: st.DrawFn) -> LineItem:
    return LineItem(
        **draw(line_ids),
        quantity=float(draw(st.integers(1, 3))),
        unit_price=draw(st.sampled_from([None, 5.0, 12.5])),
    )


@st.composite
def event_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """An event without its id and timestamp."""
    name = draw(st.sampled_from(NAMES))
    properties: dict[str, Any] = {}
    traits: dict[str, Any] = {}
    lines: tuple[LineItem, ...] = ()
    if name in ("Order Completed", "Order Refunded"):
        lines = tuple(draw(st.lists(line_items(), max_size=3)))
        revenue = draw(st.sampled_from([None, None, 0, 30, 42.5]))
        if revenue is not None:
            properties["revenue"] = revenue
    elif name == "Product Viewed":
        if draw(st.booleans()):
            properties["product_id"] = draw(st.sampled_from(["p1", "p2", "S3", "A1", "zz"]))
        else:
            lines = (draw(line_items()),)
    if name != "identify" and draw(st.integers(0, 2)) == 0:
        properties["coupon"] = draw(st.sampled_from(["spring", "VIP", "Spring"]))
    if draw(st.integers(0, 2)) == 0:
        properties["amount"] = draw(st.sampled_from([1, 3, 2.5, "x", True]))
    if name == "identify" or draw(st.integers(0, 6)) == 0:
        for key, values in (
            ("tier", ["gold", "silver", "platinum", None]),
            ("score", [1, 3, 5, "4"]),
            ("address", [{"city": "Paris"}, {"city": "lyon"}, "nowhere"]),
        ):
            if draw(st.booleans()):
                traits[key] = draw(st.sampled_from(values))
    return {
        "name": name,
        "channel": draw(st.sampled_from(CHANNELS)),
        "device_type": draw(st.sampled_from([None, None, "ios", "iPad", "desktop", "smart-tv"])),
        "timezone": draw(st.sampled_from([None, "Europe/Paris", "America/New_York", "Asia/Tokyo"])),
        "properties": properties,
        "traits": traits,
        "lines": lines,
    }


@dataclass(frozen=True)
class Step:
    now: int
    event: SegmentEvent | None  # None: a tick
    roundtrip: bool = False  # restore the profile from its JSON after this step


@st.composite
def streams(draw: st.DrawFn, person: str, start: int, parity: int = 0, max_size: int = 30) -> list[Step]:
    """Events and ticks of one person with a nondecreasing ``now``; ``parity`` offsets every time
    by 1 ms, so that two persons' events never tie in time (the merge test)."""
    now = start + parity
    steps: list[Step] = []
    sent: list[SegmentEvent] = []
    for n in range(draw(st.integers(1, max_size))):
        now += draw(st.sampled_from([0, 0, 1, 1, 2, 3, 6, 12, 24, 30, 48])) * H
        now += 2 * draw(st.sampled_from([0, 0, 0, 0, 1, 500, 450_000]))
        kind = draw(st.sampled_from(["event", "event", "event", "tick", "duplicate"]))
        roundtrip = draw(st.integers(0, 5)) == 0
        if kind == "tick" or (kind == "duplicate" and not sent):
            steps.append(Step(now, None, roundtrip))
            continue
        if kind == "duplicate":
            steps.append(Step(now, draw(st.sampled_from(sent)), roundtrip))
            continue
        offset = draw(st.sampled_from([0, 0, 0, -1, -2, -6, -24, -30, -72, 1, 3, 24])) * H
        event = SegmentEvent(message_id=f"{person}-m{n}", timestamp_ms=now + offset, **draw(event_bodies()))
        sent.append(event)
        steps.append(Step(now, event, roundtrip))
    return steps


# -- driving the engine --------------------------------------------------------------------------


@dataclass
class Run:
    """One person driven through the engine, with its history for the reference."""

    engine: SegmentEngine
    reference: ReferenceSegments
    profile: Profile
    history: list[tuple[int, SegmentEvent]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    now: int = 0

    def members(self) -> set[str]:
        return set(self.profile.current_members())

    def expected(self, at: int) -> set[str]:
        return self.reference.members(self.history, at)

    def check(self, at: int, what: str) -> None:
        assert self.members() == self.expected(at), f"{what} at {at}"

    def tick_deadlines(self, until: int) -> None:
        """Tick at every deadline up to ``until``; nothing may change between deadlines."""
        for _ in range(1000):
            deadline = self.engine.next_deadline(self.profile, self.now)
            if deadline is None or deadline > until:
                break
            assert deadline > self.now
            if deadline - 1 > self.now:
                self.check(deadline - 1, "before the deadline")
            self.changes += self.engine.tick(self.profile, deadline)
            self.now = deadline
            self.check(deadline, "ticked at the deadline")
        else:
            raise AssertionError("deadlines do not advance")
        if until - 1 > self.now:
            self.check(until - 1, "no deadline before the next step")

    def step(self, step: Step, *, deadlines: bool) -> None:
        assert step.now >= self.now
        if deadlines:
            self.tick_deadlines(step.now)
        self.now = step.now
        if step.event is None:
            self.changes += self.engine.tick(self.profile, step.now)
            self.check(step.now, "after tick")
        else:
            self.history.append((step.now, step.event))
            self.changes += self.engine.apply(self.profile, step.event, step.now)
            self.check(step.now, f"after {step.event.name} {step.event.message_id}")
        if step.roundtrip:
            self.profile = Profile.from_json(self.profile.to_json())
            self.check(step.now, "after the JSON round trip")

    def run(self, steps: list[Step], *, deadlines: bool) -> None:
        for step in steps:
            self.step(step, deadlines=deadlines)
        check_changes(self.changes, self.profile)


def key_of(change: Change) -> str:
    return change.segment_id if change.subject is None else f"{change.segment_id}{SEP}{change.subject}"


def check_changes(changes: list[Change], profile: Profile) -> None:
    """Per membership key: seq 1, 2, 3 ..., entered on odd seq; replaying gives the membership."""
    replay: dict[str, bool] = {}
    seqs: dict[str, int] = {}
    for change in changes:
        assert change.person_id == profile.person_id
        key = key_of(change)
        assert change.seq == seqs.get(key, 0) + 1, f"{key}: seq {change.seq} after {seqs.get(key, 0)}"
        assert change.entered == (change.seq % 2 == 1)
        assert change.entered != replay.get(key, False), f"{key}: repeated {change.entered}"
        seqs[key] = change.seq
        replay[key] = change.entered
    assert {key for key, member in replay.items() if member} == set(profile.current_members())


def engine_for(definitions: list[SegmentDefinition], version: int = 1) -> SegmentEngine:
    return SegmentEngine([(d, version) for d in definitions], CATALOG)


def start_of(draw: Callable[[st.SearchStrategy[int]], int]) -> int:
    return BASE + draw(st.integers(0, 400)) * 24 * H


# -- properties ----------------------------------------------------------------------------------


@PROPERTY_TESTS
@given(st.data())
def test_membership_equals_reference_after_every_step(data: st.DataObject) -> None:
    definitions = validated(data.draw(definition_sets(), label="definitions"))
    steps = data.draw(streams("a", start_of(data.draw)), label="steps")
    run = Run(engine_for(definitions), ReferenceSegments(definitions, CATALOG), Profile("a"))
    run.run(steps, deadlines=False)


@PROPERTY_TESTS
@given(st.data())
def test_ticking_at_every_deadline_keeps_membership_equal_to_reference(data: st.DataObject) -> None:
    definitions = validated(data.draw(definition_sets(), label="definitions"))
    steps = data.draw(streams("a", start_of(data.draw)), label="steps")
    run = Run(engine_for(definitions), ReferenceSegments(definitions, CATALOG), Profile("a"))
    run.run(steps, deadlines=True)
    run.tick_deadlines(run.now + 400 * 24 * H)  # and long after the last event
    check_changes(run.changes, run.profile)


@PROPERTY_TESTS
@given(st.data())
def test_merge_gives_survivor_the_membership_of_both_streams(data: st.DataObject) -> None:
    definitions = validated(data.draw(definition_sets(), label="definitions"))
    start = start_of(data.draw)
    deadlines = data.draw(st.booleans(), label="tick deadlines")
    engine, reference = engine_for(definitions), ReferenceSegments(definitions, CATALOG)
    survivor = Run(engine, reference, Profile("a"))
    merged = Run(engine, reference, Profile("b"))
    survivor.run(data.draw(streams("a", start, max_size=15), label="survivor"), deadlines=deadlines)
    merged.run(data.draw(streams("b", start, parity=1, max_size=15), label="merged"), deadlines=deadlines)
    assume(survivor.history or merged.history)  # the worker keeps profiles of persons with events only
    now = max(survivor.now, merged.now) + data.draw(st.sampled_from([0, 1, H, 24 * H]))
    if deadlines:
        survivor.tick_deadlines(now)
    gone, changes = engine.absorb(survivor.profile, merged.profile, now)
    merged.changes += gone
    assert all(not change.entered and change.trigger == "merge" for change in gone)
    assert merged.profile.current_members() == []
    check_changes(merged.changes, merged.profile)
    survivor.changes += changes
    survivor.now = now
    # The union, the merged person's events first: only ties in time would depend on this order.
    survivor.history = merged.history + survivor.history
    survivor.check(now, "after the merge")
    tail = data.draw(streams("a2", now, max_size=8), label="after the merge")
    survivor.run(tail, deadlines=deadlines)


def _rethreshold(condition: Any, draw: st.DrawFn) -> Any:
    """The condition with new numbers in its measures and derived comparisons (same features)."""
    if isinstance(condition, list):
        return [_rethreshold(c, draw) for c in condition]
    if not isinstance(condition, dict):
        return condition
    changed = {key: _rethreshold(value, draw) for key, value in condition.items()}
    targets = [changed.get(m) for m in ("count", "sum", "min", "max")]
    if "derived" in condition:
        targets.append(changed)
    for target in targets:
        if isinstance(target, dict):
            for op in ("gt", "gte", "lt", "lte", "eq"):
                if isinstance(target.get(op), int | float):
                    target[op] = draw(st.sampled_from([0, 0.5, 1, 2, 3, 10, 30]))
    return changed


@PROPERTY_TESTS
@given(st.data())
def test_reevaluate_after_a_new_threshold_equals_reference_of_new_definition(data: st.DataObject) -> None:
    raw = data.draw(definition_sets(), label="definitions")
    definitions = validated(raw)
    start = start_of(data.draw)
    deadlines = data.draw(st.booleans(), label="tick deadlines")
    run = Run(engine_for(definitions), ReferenceSegments(definitions, CATALOG), Profile("a"))
    run.run(data.draw(streams("a", start, max_size=20), label="before"), deadlines=deadlines)
    assume(run.history)  # the worker keeps profiles of persons with events only
    new_raw = [{**d, "when": _rethreshold(d["when"], data.draw)} if "when" in d else d for d in raw]
    note(f"redefined: {new_raw}")
    redefined = validated(new_raw)
    run.engine = engine_for(redefined, version=2)
    run.reference = ReferenceSegments(redefined, CATALOG)
    run.changes += run.engine.reevaluate(run.profile, run.now, "definition", "redefined")
    run.check(run.now, "after redefinition")
    run.run(data.draw(streams("a2", run.now, max_size=10), label="after"), deadlines=deadlines)


@PROPERTY_TESTS
@given(st.data())
def test_restored_profile_behaves_like_the_original(data: st.DataObject) -> None:
    definitions = validated(data.draw(definition_sets(), label="definitions"))
    steps = data.draw(streams("a", start_of(data.draw)), label="steps")
    cut = data.draw(st.integers(0, len(steps)), label="cut")
    engine = engine_for(definitions)

    def step(profile: Profile, step: Step) -> list[Change]:
        if step.event is None:
            return engine.tick(profile, step.now)
        return engine.apply(profile, step.event, step.now)

    original = Profile("a")
    for s in steps[:cut]:
        step(original, s)
    restored = Profile.from_json(original.to_json())
    for s in steps[cut:]:
        assert step(restored, s) == step(original, s)
        assert restored.to_json() == original.to_json()
