"""The example definitions of deploy/segments/: they load together, each behaves as its comment says on a
hand-written scenario, and each gets members when the demo's simulated shop runs through the engine."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.domain.catalog import Catalog, Product
from streams.domain.events import Event
from streams.domain.identifiers import NormalisationRules, extract
from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.profile import Profile
from streams.domain.simulation import generate
from streams.sources.catalog_import import DEMO_SEED, simulated_catalog
from streams.stages.segments.definitions import read_definition_files
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import event_body, resolved_event
from streams.wire.segments import decode_resolved

EXAMPLES = Path(__file__).resolve().parents[4] / "deploy" / "segments"
DAY = 86_400_000
HOUR = 3_600_000
T0 = int(datetime(2025, 12, 1, 10, tzinfo=UTC).timestamp() * 1000)  # a Monday in winter

SHOE = Product(
    "P-SHOE",
    name="Stride Runner",
    category="shoes",
    brand="Stride",
    price=89.0,
    web_skus=("SKU-SHO-1",),
    app_product_ids=("app-101",),
    eans=("5012345678900",),
)
BOOT = Product(
    "P-BOOT",
    name="Peakline Boot",
    category="shoes",
    brand="Peakline",
    price=120.0,
    web_skus=("SKU-SHO-2",),
    eans=("5012345678917",),
)
MUG = Product(
    "P-MUG",
    name="Hearth Mug",
    category="home",
    brand="Hearth",
    price=12.0,
    web_skus=("SKU-HOM-1",),
    eans=("5012345678924",),
)
CATALOG = Catalog.of([SHOE, BOOT, MUG])


def example_definitions() -> list[SegmentDefinition]:
    """Every definition of deploy/segments/, loaded together (raises DefinitionError on any problem)."""
    return load_definitions(read_definition_files(EXAMPLES))


@pytest.fixture(scope="module")
def definitions() -> list[SegmentDefinition]:
    return example_definitions()


@pytest.fixture(scope="module")
def engine(definitions: list[SegmentDefinition]) -> SegmentEngine:
    return SegmentEngine([(d, 1) for d in definitions], CATALOG, timezone="UTC")


class Person:
    """One shopper's profile, fed hand-written events at controlled times."""

    _ids = itertools.count()

    def __init__(self, engine: SegmentEngine) -> None:
        self.engine = engine
        self.profile = Profile(f"person-{next(self._ids)}")

    def does(self, name: str, at: int, *, channel: str = "web", **fields: Any) -> list[Change]:
        """Apply an event stamped ``at`` at ``at`` (no lag); returns the changes."""
        message_id = f"{self.profile.person_id}-{at}-{name}"
        event = SegmentEvent(message_id=message_id, timestamp_ms=at, name=name, channel=channel, **fields)
        return self.engine.apply(self.profile, event, at)

    def waits_until(self, at: int) -> list[Change]:
        return self.engine.tick(self.profile, at)

    def member(self, segment_id: str, subject: str | None = None) -> bool:
        return self.profile.is_member(segment_id if subject is None else f"{segment_id}\x1f{subject}")


def moves(changes: list[Change], segment_id: str) -> list[tuple[str | None, str]]:
    """(subject, entered|exited) of the changes of one segment, in order."""
    return [(c.subject, "entered" if c.entered else "exited") for c in changes if c.segment_id == segment_id]


def order(total: float, *lines: LineItem) -> dict[str, Any]:
    return {"properties": {"total": total, "currency": "GBP"}, "lines": lines}


# -- loading -------------------------------------------------------------------------------------------


def test_all_examples_load_together(definitions: list[SegmentDefinition]) -> None:
    ids = {d.id for d in definitions}
    assert ids == {
        "new-customers",
        "returning-customers",
        "customers",
        "prospects",
        "high-value",
        "browsed-shoes-not-bought",
        "lapsed-customers",
        "winter-shoppers",
        "mobile-evening-browsers",
        "already-purchased",
        "already-purchased-category",
    }
    kinds = {d.id: (d.kind, d.per, d.returns_exit) for d in definitions if d.kind == "suppression"}
    assert kinds == {
        "already-purchased": ("suppression", "product", True),
        "already-purchased-category": ("suppression", "category", False),
    }


def test_every_example_file_explains_its_use() -> None:
    for path in sorted(EXAMPLES.glob("*.yaml")):
        comment = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert len(comment) >= 8, f"{path.name}: needs a comment block on the business use and how to act"
        assert any("How to act" in line for line in comment), f"{path.name}: say how to act on it"


# -- new vs returning ----------------------------------------------------------------------------------


def test_first_order_makes_a_new_customer_and_the_second_a_returning_one(engine: SegmentEngine) -> None:
    ann = Person(engine)
    first = ann.does("Order Completed", T0, **order(60.0))
    assert moves(first, "new-customers") == [(None, "entered")]
    assert moves(first, "returning-customers") == []
    second = ann.does("Order Completed", T0 + 10 * DAY, channel="store", **order(40.0))
    assert moves(second, "new-customers") == [(None, "exited")]
    assert moves(second, "returning-customers") == [(None, "entered")]
    assert moves(ann.waits_until(T0 + 60 * DAY), "returning-customers") == []
    assert ann.member("returning-customers") and not ann.member("new-customers")


def test_new_customer_leaves_thirty_days_after_the_first_order_without_an_event(
    engine: SegmentEngine,
) -> None:
    bob = Person(engine)
    bob.does("Order Completed", T0, **order(25.0))
    assert moves(bob.waits_until(T0 + 30 * DAY), "new-customers") == []  # exactly 30 days: still within
    assert moves(bob.waits_until(T0 + 30 * DAY + 1000), "new-customers") == [(None, "exited")]
    assert not bob.member("returning-customers")  # one order: neither new any more nor returning


# -- customers vs prospects ----------------------------------------------------------------------------


def test_identified_visitor_is_a_prospect_until_the_first_purchase(engine: SegmentEngine) -> None:
    cara = Person(engine)
    assert moves(cara.does("page", T0), "prospects") == []  # anonymous: nobody to email
    joined = cara.does("identify", T0 + HOUR, traits={"email": "cara@example.com"})
    assert moves(joined, "prospects") == [(None, "entered")]
    bought = cara.does("Order Completed", T0 + 2 * DAY, channel="app", **order(30.0))
    assert moves(bought, "customers") == [(None, "entered")]
    assert moves(bought, "prospects") == [(None, "exited")]  # the welcome incentive stops at once


def test_an_email_trait_on_any_event_makes_a_prospect(engine: SegmentEngine) -> None:
    dev = Person(engine)
    signed_up = dev.does("Signed Up", T0, traits={"email": "dev@example.com"})
    assert moves(signed_up, "prospects") == [(None, "entered")]


def test_a_store_buyer_is_a_customer_and_never_a_prospect(engine: SegmentEngine) -> None:
    eva = Person(engine)
    changes = eva.does("Order Completed", T0, channel="store", **order(15.0))
    assert moves(changes, "customers") == [(None, "entered")]
    assert moves(eva.does("identify", T0 + DAY, traits={"email": "eva@example.com"}), "prospects") == []


# -- high value ----------------------------------------------------------------------------------------


def test_high_value_enters_at_500_in_a_year_and_leaves_when_old_orders_age_out(
    engine: SegmentEngine,
) -> None:
    finn = Person(engine)
    assert moves(finn.does("Order Completed", T0, **order(300.0)), "high-value") == []
    later = T0 + 100 * DAY
    assert moves(finn.does("Order Completed", later, channel="store", **order(250.0)), "high-value") == [
        (None, "entered")
    ]
    assert moves(finn.waits_until(T0 + 365 * DAY - 1000), "high-value") == []  # first order still inside
    assert moves(finn.waits_until(T0 + 365 * DAY), "high-value") == [(None, "exited")]


def test_gold_loyalty_tier_is_high_value_without_spend(engine: SegmentEngine) -> None:
    gita = Person(engine)
    changes = gita.does("identify", T0, traits={"email": "gita@example.com", "loyalty_tier": "Gold"})
    assert moves(changes, "high-value") == [(None, "entered")]
    assert moves(gita.does("identify", T0 + DAY, traits={"loyalty_tier": "silver"}), "high-value") == [
        (None, "exited")
    ]


# -- browsed a category but did not buy ----------------------------------------------------------------


def test_shoe_browser_enters_and_leaves_on_buying_shoes_in_another_channel(engine: SegmentEngine) -> None:
    hugo = Person(engine)
    viewed = hugo.does("Product Viewed", T0, properties={"product_id": "P-SHOE", "sku": "SKU-SHO-1"})
    assert moves(viewed, "browsed-shoes-not-bought") == [(None, "entered")]
    # bought a different pair of shoes in a store: the category is what counts
    bought = hugo.does(
        "Order Completed", T0 + DAY, channel="store", **order(120.0, LineItem(ean="5012345678917"))
    )
    assert moves(bought, "browsed-shoes-not-bought") == [(None, "exited")]


def test_shoe_browser_leaves_seven_days_after_the_last_view(engine: SegmentEngine) -> None:
    ines = Person(engine)
    ines.does("Product Viewed", T0, channel="app", properties={"product_id": "app-101"})
    assert ines.member("browsed-shoes-not-bought")
    assert moves(ines.waits_until(T0 + 7 * DAY + 1), "browsed-shoes-not-bought") == [(None, "exited")]


def test_viewing_another_category_or_buying_other_things_does_not_count(engine: SegmentEngine) -> None:
    jon = Person(engine)
    assert (
        moves(jon.does("Product Viewed", T0, properties={"sku": "SKU-HOM-1"}), "browsed-shoes-not-bought")
        == []
    )
    jon.does("Product Viewed", T0 + HOUR, properties={"sku": "SKU-SHO-2"})
    mug = jon.does("Order Completed", T0 + 2 * HOUR, **order(12.0, LineItem(sku="SKU-HOM-1")))
    assert moves(mug, "browsed-shoes-not-bought") == []
    assert jon.member("browsed-shoes-not-bought")


# -- lapsed --------------------------------------------------------------------------------------------


def test_lapsed_after_one_and_a_half_usual_intervals_and_back_with_the_next_order(
    engine: SegmentEngine,
) -> None:
    kira = Person(engine)
    for n in range(3):  # every 10 days: usual interval 10 days
        assert moves(kira.does("Order Completed", T0 + n * 10 * DAY, **order(20.0)), "lapsed-customers") == []
    last = T0 + 20 * DAY
    assert moves(kira.waits_until(last + 15 * DAY - 1000), "lapsed-customers") == []  # not 1.5 yet
    assert moves(kira.waits_until(last + 15 * DAY + 1000), "lapsed-customers") == [(None, "entered")]
    back = kira.does("Order Completed", last + 40 * DAY, channel="store", **order(20.0))
    assert moves(back, "lapsed-customers") == [(None, "exited")]


def test_a_single_order_never_lapses(engine: SegmentEngine) -> None:
    liam = Person(engine)
    liam.does("Order Completed", T0, **order(20.0))
    liam.waits_until(T0 + 400 * DAY)
    assert not liam.member("lapsed-customers")


# -- seasonal shoppers ---------------------------------------------------------------------------------


def test_winter_buyer_is_a_winter_shopper_until_buying_in_another_season(engine: SegmentEngine) -> None:
    ann = Person(engine)
    december = T0 + 10 * DAY
    assert moves(ann.does("Order Completed", december, **order(80.0)), "winter-shoppers") == [
        (None, "entered")
    ]
    october = int(datetime(2026, 10, 5, 12, tzinfo=UTC).timestamp() * 1000)
    ann.waits_until(october)
    assert ann.member("winter-shoppers")  # still one in the run-up to the next winter
    autumn_order = ann.does("Order Completed", october + DAY, **order(30.0))
    assert moves(autumn_order, "winter-shoppers") == [(None, "exited")]


def test_winter_shopper_leaves_a_year_after_the_winter_order(engine: SegmentEngine) -> None:
    bob = Person(engine)
    bob.does("Order Completed", T0, channel="store", **order(50.0))
    assert moves(bob.waits_until(T0 + 365 * DAY - 1000), "winter-shoppers") == []
    assert moves(bob.waits_until(T0 + 365 * DAY), "winter-shoppers") == [(None, "exited")]


def test_summer_buyer_is_not_a_winter_shopper(engine: SegmentEngine) -> None:
    cara = Person(engine)
    july = int(datetime(2025, 7, 10, 12, tzinfo=UTC).timestamp() * 1000)
    assert moves(cara.does("Order Completed", july, **order(50.0)), "winter-shoppers") == []


# -- mobile evening browsers ---------------------------------------------------------------------------


def test_three_mobile_evening_views_make_a_mobile_evening_browser(engine: SegmentEngine) -> None:
    dev = Person(engine)
    evening = T0 + 9 * HOUR  # 19:00 UTC
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148"
    assert (
        moves(dev.does("screen", evening, channel="app", device_type="ios"), "mobile-evening-browsers") == []
    )
    dev.does("page", evening - 8 * HOUR, user_agent=phone)  # 11:00: not evening
    dev.does("page", evening + HOUR, user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/131.0")
    assert not dev.member("mobile-evening-browsers")  # desktop and daytime views do not count
    dev.does("Product Viewed", evening + DAY, user_agent=phone, properties={"sku": "SKU-SHO-1"})
    # 23:30 UTC is 18:30 in New York: local time of the event decides
    third = dev.does(
        "page", evening + DAY + 4 * HOUR + 30 * 60_000, user_agent=phone, timezone="America/New_York"
    )
    assert moves(third, "mobile-evening-browsers") == [(None, "entered")]
    assert moves(dev.waits_until(evening + 14 * DAY + 1), "mobile-evening-browsers") == [(None, "exited")]


# -- already purchased ---------------------------------------------------------------------------------


def test_web_and_store_purchases_of_one_product_are_one_suppression(engine: SegmentEngine) -> None:
    eva = Person(engine)
    web = eva.does("Order Completed", T0, **order(89.0, LineItem(sku="SKU-SHO-1", unit_price=89.0)))
    assert moves(web, "already-purchased") == [("product:P-SHOE", "entered")]
    assert moves(web, "already-purchased-category") == [("category:shoes", "entered")]
    # the same product bought again in a store, by its EAN: same subject, nothing new to publish
    store = eva.does(
        "Order Completed", T0 + DAY, channel="store", **order(89.0, LineItem(ean="5012345678900"))
    )
    assert moves(store, "already-purchased") == []
    # one of the two returned: still holds one, stays suppressed
    returned = eva.does(
        "Product Returned", T0 + 2 * DAY, channel="store", lines=(LineItem(ean="5012345678900"),)
    )
    assert moves(returned, "already-purchased") == []
    # the web purchase refunded too: holds none, the product may be shown again (returns_exit: true);
    # the category audience keeps them (returns_exit: false)
    refunded = eva.does("Order Refunded", T0 + 3 * DAY, lines=(LineItem(sku="SKU-SHO-1"),))
    assert moves(refunded, "already-purchased") == [("product:P-SHOE", "exited")]
    assert moves(refunded, "already-purchased-category") == []
    assert eva.member("already-purchased-category", "category:shoes")


def test_purchase_enters_suppression_in_the_same_evaluation_for_each_product(engine: SegmentEngine) -> None:
    finn = Person(engine)
    basket = order(101.0, LineItem(ean="5012345678900"), LineItem(ean="5012345678924"))
    changes = finn.does("Order Completed", T0, channel="store", **basket)
    assert sorted(moves(changes, "already-purchased")) == [
        ("product:P-MUG", "entered"),
        ("product:P-SHOE", "entered"),
    ]
    assert sorted(moves(changes, "already-purchased-category")) == [
        ("category:home", "entered"),
        ("category:shoes", "entered"),
    ]


def test_without_the_catalog_channel_ids_stay_apart(definitions: list[SegmentDefinition]) -> None:
    """Why the catalog matters: without it the web SKU and the store EAN are two different subjects."""
    bare = Person(SegmentEngine([(d, 1) for d in definitions], timezone="UTC"))
    web = bare.does("Order Completed", T0, **order(89.0, LineItem(sku="SKU-SHO-1")))
    store = bare.does(
        "Order Completed", T0 + DAY, channel="store", **order(89.0, LineItem(ean="5012345678900"))
    )
    assert moves(web, "already-purchased") == [("product:sku:SKU-SHO-1", "entered")]
    assert moves(store, "already-purchased") == [("product:ean:5012345678900", "entered")]
    assert moves(web + store, "already-purchased-category") == []  # no category without a catalog


# -- the demo's simulated shop -------------------------------------------------------------------------


def simulated_events(
    seed: int, customers: int, days: int, start: datetime
) -> Iterator[tuple[str, SegmentEvent]]:
    """(person, event) of the demo simulation, through the real wire path: collector Event, Avro,
    events.resolved record, and the segment stage's decoder. One person per userId, else anonymousId,
    else the event's source identifier (no identity resolution: simple, and enough to fire segments)."""
    rules = NormalisationRules()
    received_at = start + timedelta(days=days)  # after the simulated days, as a collector receives them
    for channel, call in generate(seed=seed, customers=customers, days=days, start=start):
        event = Event.from_segment(call, channel=channel, source="demo", received_at=received_at)
        person = event.userId or event.anonymousId or event.partition_key().decode()
        identifiers = [identifier.key for identifier in extract(event, rules).identifiers]
        at = int(event.timestamp.timestamp() * 1000)
        body = event_body(EVENT_CODEC.encode(event.to_avro()))
        _, segment_event = decode_resolved(resolved_event(person, identifiers, at, body))
        yield person, segment_event


def test_every_example_gets_members_on_the_demo_stream(definitions: list[SegmentDefinition]) -> None:
    # The demo's seed and size (omniseg demo defaults), over two weeks of winter so winter-shoppers fires.
    start = datetime(2025, 12, 1, tzinfo=UTC)
    engine = SegmentEngine([(d, 1) for d in definitions], Catalog.of(simulated_catalog(DEMO_SEED)))
    profiles: dict[str, Profile] = {}
    entered: Mapping[str, set[str]] = defaultdict(set)
    next_tick: int | None = None
    now = 0
    for person, event in simulated_events(DEMO_SEED, customers=300, days=14, start=start):
        now = event.timestamp_ms
        if next_tick is None:
            next_tick = now - now % HOUR + HOUR
        while now >= next_tick:  # the worker's timer, hourly here: windows expire without events
            for profile in profiles.values():
                for change in engine.tick(profile, next_tick):
                    if change.entered:
                        entered[change.segment_id].add(profile.person_id)
            next_tick += HOUR
        profile = profiles.setdefault(person, Profile(person))
        for change in engine.apply(profile, event, now):
            if change.entered:
                entered[change.segment_id].add(person)
    members: Mapping[str, set[str]] = defaultdict(set)
    for profile in profiles.values():
        engine.tick(profile, now + 1)
        for key in profile.current_members():
            members[key.partition("\x1f")[0]].add(profile.person_id)
    for definition in definitions:
        assert entered[definition.id], f"{definition.id}: nobody entered on the demo stream"
        assert members[definition.id], f"{definition.id}: no member at the end of the demo stream"
    # sanity of the mix: the base populations are larger than the targeted segments
    assert len(members["customers"]) > len(members["high-value"]) > 0
    assert len(members["customers"]) >= len(members["new-customers"]) + len(members["returning-customers"])
