"""The official segment-analytics-python SDK pointed at the collector, read back from Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from segment.analytics import Client

from streams.api.collector import create_app
from streams.api.server import ThreadedServer
from streams.dev.process import free_port
from streams.domain.events import Event
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC
from tests.integration.api.test_collector_api import consume_all

pytestmark = pytest.mark.integration

APP_KEY = "wk_sdk_app_000001"


@pytest.fixture
def collector(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, str]]:
    settings = settings_factory(sources={APP_KEY: Source(name="ios-app", channel="app")})
    with ThreadedServer(create_app(settings), free_port()) as server:
        yield settings, server.url


def test_every_sdk_call_type_lands_decoded_on_the_channel_topic(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    errors: list[str] = []
    client = Client(APP_KEY, host=url, sync_mode=True, on_error=lambda e, _b: errors.append(str(e)))
    when = datetime(2024, 6, 1, 9, 30, 0, 123000, tzinfo=UTC)
    ids = {kind: f"sdk-{kind}-{uuid.uuid4().hex[:8]}" for kind in ("t", "i", "p", "s", "a", "g")}
    client.track(
        "user-1", "Product Added", {"sku": "SKU-9", "price": 3.5}, timestamp=when, message_id=ids["t"]
    )
    client.identify("user-1", {"email": " Ann@Example.com ", "plan": "gold"}, message_id=ids["i"])
    client.page("user-1", "Shop", "Home", {"url": "https://shop.example/"}, message_id=ids["p"])
    client.screen(anonymous_id="anon-7", category="Main", name="Cart", message_id=ids["s"])
    client.alias("anon-7", "user-1", message_id=ids["a"])
    client.group("user-1", "acme-co", {"name": "Acme"}, message_id=ids["g"])
    assert errors == []

    records = consume_all(settings, settings.channel_topic("app"), 6)
    assert len(records) == 6
    events = {e.messageId: e for e in (Event.from_avro(EVENT_CODEC.decode(v)) for _, v in records)}
    assert set(events) == set(ids.values())
    keys = {Event.from_avro(EVENT_CODEC.decode(v)).messageId: k for k, v in records}

    track = events[ids["t"]]
    assert (track.type, track.event, track.userId) == ("track", "Product Added", "user-1")
    assert track.properties == {"sku": "SKU-9", "price": 3.5}
    assert track.timestamp == when
    assert track.context.library is not None and track.context.library.name == "analytics-python"
    assert (track.context.channel, track.context.source) == ("app", "ios-app")
    assert track.sentAt is not None

    identify = events[ids["i"]]
    assert identify.type == "identify" and identify.traits == {"email": " Ann@Example.com ", "plan": "gold"}
    assert identify.identifiers.email == " Ann@Example.com "  # normalised later, by the identity stage

    page = events[ids["p"]]
    assert (page.type, page.name, page.properties) == (
        "page",
        "Home",
        {"url": "https://shop.example/", "category": "Shop"},
    )

    screen = events[ids["s"]]
    assert (screen.type, screen.name, screen.userId, screen.anonymousId) == ("screen", "Cart", None, "anon-7")
    assert screen.properties == {"category": "Main"}
    assert keys[ids["s"]] == b"anon-7"

    alias = events[ids["a"]]
    assert (alias.type, alias.previousId, alias.userId) == ("alias", "anon-7", "user-1")

    group = events[ids["g"]]
    assert (group.type, group.groupId, group.traits) == ("group", "acme-co", {"name": "Acme"})
    assert all(keys[ids[k]] == b"user-1" for k in ("t", "i", "p", "a", "g"))


def test_sdk_queued_mode_delivers_every_event_once_after_flush(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    errors: list[str] = []
    client = Client(
        APP_KEY, host=url, upload_size=100, gzip=True, on_error=lambda e, _b: errors.append(str(e))
    )
    sent = [f"q-{n}" for n in range(750)]
    for n, message_id in enumerate(sent):
        client.track(f"user-{n % 40}", "Screen Viewed", {"n": n}, message_id=message_id)
    client.flush()
    client.join()
    assert errors == []

    records = consume_all(settings, settings.channel_topic("app"), len(sent))
    decoded = [Event.from_avro(EVENT_CODEC.decode(v)) for _, v in records]
    assert sorted(e.messageId for e in decoded) == sorted(sent)
    assert all(e.properties is not None and e.messageId == f"q-{e.properties['n']}" for e in decoded)
