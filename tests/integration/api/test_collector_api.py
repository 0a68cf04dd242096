"""The collector against the real Tansu broker: what a 200 promises is on the topics, exactly."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.api.collector import create_app
from streams.api.server import ThreadedServer
from streams.bench.collector import run_collector_bench
from streams.dev.process import free_port
from streams.domain.events import Event
from streams.settings import Settings, Source
from streams.wire.codecs import EVENT_CODEC, INVALID_CODEC

pytestmark = pytest.mark.integration

WEB_KEY = "wk_it_web_000001"
STORE_KEY = "wk_it_store_00001"
SOURCES = {
    WEB_KEY: Source(name="shop-web", channel="web"),
    STORE_KEY: Source(name="till-17", channel="store"),
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def consume_all(
    settings: Settings, topic: str, expected: int, timeout_s: float = 30.0, settle_s: float = 1.5
) -> list[tuple[bytes | None, bytes]]:
    """Every record on ``topic`` once ``expected`` arrived and nothing more came for ``settle_s``."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.2):
                if message.error():
                    raise AssertionError(f"consumer error: {message.error()}")
                found.append((message.key(), message.value()))
            if len(found) >= expected:
                settle_until = settle_until or time.monotonic() + settle_s
                if time.monotonic() >= settle_until:
                    break
        return found
    finally:
        consumer.close()


@contextmanager
def running_collector(settings: Settings) -> Iterator[ThreadedServer]:
    with ThreadedServer(create_app(settings), free_port()) as server:
        yield server


@pytest.fixture
def collector(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, str]]:
    settings = settings_factory(sources=SOURCES)
    with running_collector(settings) as server:
        yield settings, server.url


def test_track_is_on_the_channel_topic_after_200(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    call = {
        "userId": "cust-1",
        "event": "Order Completed",
        "messageId": "msg-track-1",
        "timestamp": "2024-05-01T10:00:00.250Z",
        "properties": {"order_id": "A1", "currency": "EUR", "products": [{"sku": "S1", "price": 9.5}]},
    }
    response = httpx.post(f"{url}/v1/track", json=call, headers=auth(WEB_KEY))
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True

    records = consume_all(settings, settings.channel_topic("web"), 1)
    assert len(records) == 1
    key, value = records[0]
    event = Event.from_avro(EVENT_CODEC.decode(value))
    assert key == b"cust-1"
    assert (event.type, event.event, event.messageId) == ("track", "Order Completed", "msg-track-1")
    assert (event.context.channel, event.context.source) == ("web", "shop-web")
    assert event.properties == call["properties"]
    assert [(line.sku, line.unitPrice, line.currency) for line in event.lines] == [("S1", 9.5, "EUR")]
    assert event.timestamp.isoformat() == "2024-05-01T10:00:00.250000+00:00"
    assert event.receivedAt > event.timestamp
    assert consume_all(settings, settings.topic("events.invalid"), 0, settle_s=0.5) == []


def test_mixed_batch_stores_valid_and_routes_invalid_with_exact_counts(
    collector: tuple[Settings, str],
) -> None:
    settings, url = collector
    valid = [
        {"type": "track", "userId": f"u{i}", "event": "Item Scanned", "messageId": f"ok-{i}"}
        for i in range(5)
    ]
    invalid = [
        {"type": "purchase", "userId": "u9", "messageId": "bad-type"},
        {"type": "identify", "messageId": "bad-noid", "traits": {"plan": "x"}},
        {"type": "track", "userId": "u8", "event": "E", "properties": "oops", "messageId": "bad-props"},
        {"type": "page", "userId": "u7", "messageId": "bad-big", "properties": {"b": "x" * 40_000}},
    ]
    batch = [valid[0], invalid[0], valid[1], invalid[1], valid[2], invalid[2], valid[3], invalid[3], valid[4]]
    response = httpx.post(
        f"{url}/v1/batch", content=orjson.dumps({"batch": batch, "writeKey": STORE_KEY}), timeout=30
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["success"], body["accepted"], body["rejected"]) == (True, 5, 4)
    assert [(e["index"], e["field"]) for e in body["errors"]] == [
        (1, "type"),
        (3, "userId"),
        (5, "properties"),
        (7, None),
    ]

    stored = consume_all(settings, settings.channel_topic("store"), 5)
    events = sorted((Event.from_avro(EVENT_CODEC.decode(v)) for _, v in stored), key=lambda e: e.messageId)
    assert [e.messageId for e in events] == [f"ok-{i}" for i in range(5)]
    assert all(e.context.source == "till-17" for e in events)

    rejected = consume_all(settings, settings.topic("events.invalid"), 4)
    records = sorted((INVALID_CODEC.decode(v) for _, v in rejected), key=lambda r: int(r["position"]))
    assert [r["position"] for r in records] == ["1", "3", "5", "7"]
    assert [orjson.loads(r["original"]) for r in records] == invalid
    assert "unknown call type 'purchase'" in records[0]["reason"]
    assert records[1]["reason"].startswith("userId: no identifier")
    assert records[2]["reason"] == "properties: Input should be a valid dictionary"
    assert "over the limit of 32768 bytes" in records[3]["reason"]
    assert all(r["stage"] == "collector" and r["source"] == "till-17" for r in records)
    # Nothing leaked to another channel.
    assert consume_all(settings, settings.channel_topic("web"), 0, settle_s=0.5) == []


def test_import_is_batch(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    batch = [{"type": "identify", "anonymousId": f"a{i}", "messageId": f"imp-{i}"} for i in range(3)]
    response = httpx.post(f"{url}/v1/import", json={"batch": batch}, headers=auth(WEB_KEY))
    assert response.status_code == 200 and response.json()["accepted"] == 3
    assert len(consume_all(settings, settings.channel_topic("web"), 3)) == 3


def test_ready_and_health_are_ok_with_broker_and_topics(collector: tuple[Settings, str]) -> None:
    _, url = collector
    response = httpx.get(f"{url}/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "brokers": 1, "missing_topics": []}
    alive = httpx.get(f"{url}/health")
    assert alive.status_code == 200 and alive.json()["status"] == "ok"


def test_ready_reports_missing_topics(stack: Any) -> None:
    settings = stack.settings(topic_prefix=f"absent{uuid.uuid4().hex[:8]}.", sources=SOURCES)
    with running_collector(settings) as server:
        response = httpx.get(f"{server.url}/ready", timeout=10)
    assert response.status_code == 503
    assert settings.channel_topic("store") in response.json()["missing_topics"]


def test_unreachable_broker_answers_503_never_200() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", sources=SOURCES, produce_timeout_s=1.5)
    with running_collector(settings) as server:
        started = time.monotonic()
        response = httpx.post(
            f"{server.url}/v1/track", json={"userId": "u", "event": "e"}, headers=auth(WEB_KEY), timeout=10
        )
        elapsed = time.monotonic() - started
        ready = httpx.get(f"{server.url}/ready", timeout=10)
        alive = httpx.get(f"{server.url}/health", timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    body = response.json()
    assert body["code"] == "unavailable" and "retry" in body["message"]
    assert 1.0 < elapsed < 6.0
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    assert alive.status_code == 200, "liveness: the collector itself works; restarting it would not help"


def test_requests_answered_200_during_shutdown_are_all_stored(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(sources=SOURCES)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(worker: int) -> None:
        with httpx.Client(base_url=server.url, headers=auth(WEB_KEY), timeout=30) as client:
            for n in range(10_000):
                if stop.is_set():
                    return
                ids = [f"w{worker}-{n}-{i}" for i in range(50)]
                batch = [{"type": "track", "userId": "u", "event": "e", "messageId": m} for m in ids]
                try:
                    response = client.post("/v1/batch", json={"batch": batch})
                except httpx.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.extend(ids)

    server = ThreadedServer(create_app(settings), free_port())
    with server:
        threads = [threading.Thread(target=sender, args=(w,)) for w in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1.0)
    # The server has shut down (producer flushed) while requests were in flight.
    stop.set()
    for thread in threads:
        thread.join()
    assert len(acknowledged) > 0
    stored = consume_all(settings, settings.channel_topic("web"), len(acknowledged))
    stored_ids = {Event.from_avro(EVENT_CODEC.decode(v)).messageId for _, v in stored}
    assert set(acknowledged) <= stored_ids


def test_bench_posts_every_event_and_they_are_all_stored(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    port = int(url.rsplit(":", 1)[1])
    result = run_collector_bench(settings, events=2_000, concurrency=2, batch_size=200, port=port)
    assert result["requests_failed"] == 0, result["failures"]
    assert result["events_acknowledged"] == 2_000
    assert result["events_per_s"] > 0 and result["latency_p99_ms"] >= result["latency_p50_ms"]
    # 2,000 timed events plus one warm-up batch of 200.
    stored = consume_all(settings, settings.channel_topic("web"), 2_200)
    assert len(stored) == 2_200


def test_a_batch_item_nested_1000_deep_is_rejected_alone_and_the_rest_stored(
    collector: tuple[Settings, str],
) -> None:
    settings, url = collector
    deep = b'{"type":"track","userId":"u","event":"Deep","properties":' + b'{"a":' * 999 + b"1" + b"}" * 1000
    good = [
        orjson.dumps({"type": "track", "userId": f"u{i}", "event": "E", "messageId": f"ok-{i}"})
        for i in (0, 1)
    ]
    body = b'{"batch":[' + b",".join([good[0], deep, good[1]]) + b"]}"
    response = httpx.post(f"{url}/v1/batch", content=body, headers=auth(WEB_KEY), timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["accepted"], answer["rejected"], answer["errors_omitted"]) == (2, 1, 0)
    assert (
        answer["errors"][0]["reason"] == "the event is nested 1000 levels deep, over the limit of 64 levels"
    )

    stored = consume_all(settings, settings.channel_topic("web"), 2)
    assert sorted(Event.from_avro(EVENT_CODEC.decode(v)).messageId for _, v in stored) == ["ok-0", "ok-1"]
    [(_, value)] = consume_all(settings, settings.topic("events.invalid"), 1)
    kept = INVALID_CODEC.decode(value)
    assert (kept["position"], kept["original"]) == ("1", deep)


def test_a_request_refused_whole_is_on_events_invalid(collector: tuple[Settings, str]) -> None:
    settings, url = collector
    body = orjson.dumps({"batch": [{"type": "track"}] * 2_501})
    response = httpx.post(f"{url}/v1/batch", content=body, headers=auth(STORE_KEY), timeout=30)
    assert response.status_code == 400
    assert response.json()["code"] == "too_many_items"
    [(key, value)] = consume_all(settings, settings.topic("events.invalid"), 1)
    kept = INVALID_CODEC.decode(value)
    assert key == b"till-17"
    assert (kept["stage"], kept["source"], kept["position"]) == ("collector", "till-17", None)
    assert kept["reason"].startswith("batch: 2501 calls, over the limit of 2500 calls per batch")
    assert kept["original"] == body[: settings.max_event_bytes]
    assert consume_all(settings, settings.channel_topic("store"), 0, settle_s=0.5) == []


def test_over_its_rate_a_write_key_gets_429_and_nothing_more_is_stored(
    settings_factory: Callable[..., Settings],
) -> None:
    # 0.01 calls a second: a burst of one call, then 100 s before the next.
    settings = settings_factory(sources=SOURCES, collector_rate_limit_per_s=0.01)
    call = {"userId": "u1", "event": "E", "messageId": "rate-1"}
    with running_collector(settings) as server:
        first = httpx.post(f"{server.url}/v1/track", json=call, headers=auth(WEB_KEY), timeout=30)
        second = httpx.post(
            f"{server.url}/v1/track", json={**call, "messageId": "rate-2"}, headers=auth(WEB_KEY), timeout=30
        )
        other_key = httpx.post(f"{server.url}/v1/track", json=call, headers=auth(STORE_KEY), timeout=30)
    assert first.status_code == 200 and other_key.status_code == 200
    assert second.status_code == 429
    assert 1 <= int(second.headers["Retry-After"]) <= 100
    assert second.json()["code"] == "rate_limited"
    stored = consume_all(settings, settings.channel_topic("web"), 1)
    assert [Event.from_avro(EVENT_CODEC.decode(v)).messageId for _, v in stored] == ["rate-1"]
