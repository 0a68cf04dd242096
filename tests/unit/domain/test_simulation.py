"""The demo simulation: deterministic, realistic, and every call is accepted by the event contract."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from streams.domain.events import Event
from streams.domain.simulation import catalog, ean13, generate, stream_id

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_same_seed_same_stream() -> None:
    first = list(generate(seed=3, customers=40, days=5, start=START))
    assert first == list(generate(seed=3, customers=40, days=5, start=START))
    assert first != list(generate(seed=4, customers=40, days=5, start=START))


def test_every_call_is_a_valid_event_in_time_order() -> None:
    calls = list(generate(seed=1, customers=120, days=8, start=START))
    stamps = [call["timestamp"] for _, call in calls]
    assert stamps == sorted(stamps)
    now = datetime.now(UTC)
    for channel, call in calls:
        Event.from_segment(call, channel=channel, source="sim", received_at=now)
    assert len({call["messageId"] for _, call in calls}) == len(calls)


def test_stream_covers_all_channels_and_the_shopping_journey() -> None:
    seen = Counter(
        (channel, call.get("event") or call["type"])
        for channel, call in generate(seed=2, customers=200, days=10, start=START)
    )
    for key in [
        ("web", "Product Viewed"),
        ("web", "Product Added"),
        ("web", "Order Completed"),
        ("web", "identify"),
        ("app", "screen"),
        ("app", "Order Completed"),
        ("email", "Email Sent"),
        ("email", "Email Opened"),
        ("email", "Email Link Clicked"),
        ("store", "Order Completed"),
    ]:
        assert seen[key] > 0, key


def test_store_baskets_carry_loyalty_card_and_valid_eans() -> None:
    eans = {product.ean for product in catalog(5)}
    stores = [
        call for channel, call in generate(seed=5, customers=200, days=10, start=START) if channel == "store"
    ]
    assert stores
    for call in stores:
        assert call["identifiers"]["loyaltyCard"]
        for line in call["lines"]:
            assert line["ean"] in eans
            assert ean13(line["ean"][:12]) == line["ean"]


def test_catalog_ids_are_unique_per_channel() -> None:
    products = catalog(0)
    for attribute in ("product_id", "web_sku", "app_product_id", "ean"):
        assert len({getattr(p, attribute) for p in products}) == len(products), attribute
    assert ean13("400638133393") == "4006381333931"


def test_same_seed_same_message_ids_at_any_time_of_the_day() -> None:
    morning = list(generate(seed=3, customers=40, days=5, start=START.replace(hour=6)))
    evening = list(generate(seed=3, customers=40, days=5, start=START.replace(hour=21, minute=17)))
    assert [call["messageId"] for _, call in morning] == [call["messageId"] for _, call in evening]
    assert all(call["messageId"].startswith(stream_id(3, 40, 5) + "-") for _, call in morning)


def test_other_streams_never_reuse_a_message_id() -> None:
    ids = {call["messageId"] for _, call in generate(seed=3, customers=40, days=5, start=START)}
    for seed, customers, days in [(4, 40, 5), (3, 41, 5), (3, 40, 6)]:
        other = {
            call["messageId"] for _, call in generate(seed=seed, customers=customers, days=days, start=START)
        }
        assert not ids & other, (seed, customers, days)
