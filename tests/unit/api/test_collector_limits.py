"""Bounded abuse at intake: nesting depth, calls per batch, the batch answer's size, the rate limit per
write key, constant-time write keys, exact gzip streams, and whole refusals kept on events.invalid.

The producer is a recorder set on the app (no lifespan runs), so these tests see every record the
collector would produce, and nothing reaches a broker.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from streams.api.collector import create_app
from streams.api.intake import CollectorError, Intake
from streams.api.json_tree import nesting_depth
from streams.api.producer import OutRecord
from streams.settings import Settings, Source
from streams.wire.codecs import INVALID_CODEC

WEB_KEY = "wk_limits_web_001"
APP_KEY = "wk_limits_app_001"
SOURCES = {WEB_KEY: Source(name="shop-web", channel="web"), APP_KEY: Source(name="shop-app", channel="app")}
TRACK = {"type": "track", "userId": "u1", "event": "Viewed"}


class RecordingProducer:
    """Stands in for the Kafka producer: every record is acknowledged at once and kept here."""

    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        self.records.extend(records)

    def on(self, topic: str) -> list[OutRecord]:
        return [record for record in self.records if record.topic == topic]

    def invalid(self) -> list[dict[str, Any]]:
        return [INVALID_CODEC.decode(record.value) for record in self.on("events.invalid")]


Collector = tuple[TestClient, RecordingProducer]


@pytest.fixture
def collector_factory() -> Callable[..., Collector]:
    def make(**overrides: Any) -> Collector:
        settings = Settings(kafka_bootstrap="127.0.0.1:1", sources=SOURCES, **overrides)
        app = create_app(settings)
        producer = RecordingProducer()
        app.state.producer = producer
        return TestClient(app), producer

    return make


@pytest.fixture
def collector(collector_factory: Callable[..., Collector]) -> Collector:
    return collector_factory()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(client: TestClient, path: str, body: Any, key: str | None = WEB_KEY, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers={**(basic(key) if key else {}), **headers})


def nested(levels: int) -> bytes:
    """JSON text of ``levels`` objects nested in each other (orjson cannot write more than 254)."""
    return b'{"a":' * (levels - 1) + b'{"a":1}' + b"}" * (levels - 1) if levels else b"1"


def call_nested(levels: int, message_id: str = "deep") -> bytes:
    """A track call nested ``levels`` deep in all (the call itself is the first level)."""
    head = b'{"type":"track","userId":"u1","event":"Deep","messageId":"' + message_id.encode() + b'"'
    return head + (b',"properties":' + nested(levels - 1) if levels > 1 else b"") + b"}"


DEPTHS = [1, 63, 64, 65, 500, 979, 980, 1000, 1023, 1024, 1025, 1100]


# -- nesting depth ------------------------------------------------------------------------------------


def test_the_test_calls_nest_as_deep_as_they_say() -> None:
    for levels in (1, 2, 64, 65, 1000, 1024):
        assert nesting_depth(orjson.loads(call_nested(levels))) == levels


@pytest.mark.parametrize("levels", DEPTHS)
def test_a_single_call_at_any_depth_is_stored_or_refused_with_400(collector: Collector, levels: int) -> None:
    client, producer = collector
    response = post(client, "/v1/track", call_nested(levels))
    if levels <= 64:
        assert response.status_code == 200, response.text
        assert len(producer.on("events.web")) == 1
        return
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "too_deep"
    assert "over the limit of 64 levels" in body["message"]
    assert producer.on("events.web") == []
    [kept] = producer.invalid()
    assert kept["stage"] == "collector" and kept["source"] == "shop-web"
    assert "nested" in kept["reason"] and "64 levels" in kept["reason"]


@pytest.mark.parametrize("levels", DEPTHS)
def test_a_batch_item_at_any_depth_is_stored_or_rejected_alone(collector: Collector, levels: int) -> None:
    client, producer = collector
    good = [orjson.dumps({**TRACK, "messageId": f"ok-{n}"}) for n in range(2)]
    body = b'{"batch":[' + b",".join([good[0], call_nested(levels), good[1]]) + b"]}"
    response = post(client, "/v1/batch", body)
    if levels + 2 > 1024:
        # The batch around the item is deeper than JSON parsers read: refused whole, and kept.
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "too_deep"
        [kept] = producer.invalid()
        assert kept["position"] is None and kept["original"] == body
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    if levels <= 64:
        assert (answer["accepted"], answer["rejected"]) == (3, 0)
        return
    assert (answer["accepted"], answer["rejected"]) == (2, 1)
    [error] = answer["errors"]
    assert error["index"] == 1
    assert error["reason"] == f"the event is nested {levels} levels deep, over the limit of 64 levels"
    assert len(producer.on("events.web")) == 2
    [kept] = producer.invalid()
    assert kept["position"] == "1"
    assert kept["original"] == call_nested(levels)


def test_depth_is_checked_with_the_configured_limit(collector_factory: Callable[..., Collector]) -> None:
    client, _ = collector_factory(max_event_depth=3)
    assert post(client, "/v1/track", call_nested(3)).status_code == 200
    refused = post(client, "/v1/track", call_nested(4))
    assert refused.status_code == 400
    assert refused.json()["message"] == "the event is nested 4 levels deep, over the limit of 3 levels"


def test_calls_at_the_highest_allowed_depth_with_huge_integers_are_stored(
    collector_factory: Callable[..., Collector],
) -> None:
    # 200 levels and a number beyond 64 bits: the exact parser and writers recurse, and must not fail.
    client, producer = collector_factory(max_event_depth=200)
    body = call_nested(200).replace(b'{"a":1}', b'{"a":123456789012345678901234567890}')
    assert post(client, "/v1/track", body).status_code == 200
    batch = b'{"batch":[' + body + b"]}"
    assert post(client, "/v1/batch", batch).json()["accepted"] == 1
    assert len(producer.on("events.web")) == 2


def test_a_deep_batch_with_long_numbers_is_refused_whole_never_500(collector: Collector) -> None:
    client, producer = collector
    big = orjson.dumps({**TRACK, "messageId": "big"}).replace(b'"u1"', b"123456789012345678901234")
    body = b'{"batch":[' + big + b"," + call_nested(1020) + b"]}"
    response = post(client, "/v1/batch", body)
    assert response.status_code == 400
    assert response.json()["code"] == "too_deep"
    assert len(producer.invalid()) == 1


def test_a_batch_context_too_deep_for_every_call_is_refused_whole(collector: Collector) -> None:
    client, _ = collector
    body = b'{"context":' + nested(64) + b',"batch":[' + orjson.dumps(TRACK) + b"]}"
    response = post(client, "/v1/batch", body)
    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("too_deep", "context")
    shallow = b'{"context":' + nested(63) + b',"batch":[' + orjson.dumps(TRACK) + b"]}"
    assert post(client, "/v1/batch", shallow).status_code == 200


def test_the_depth_limit_stays_where_later_steps_cannot_recurse_too_far() -> None:
    with pytest.raises(ValidationError):
        Settings(max_event_depth=201)


# -- calls per batch, and the batch answer ---------------------------------------------------------


@pytest.mark.parametrize("count", [2_501, 100_000])
def test_a_batch_over_the_item_limit_is_refused_whole_and_kept_once(collector: Collector, count: int) -> None:
    client, producer = collector
    body = orjson.dumps({"batch": [0] * count})
    response = post(client, "/v1/batch", body)
    assert response.status_code == 400
    answer = response.json()
    assert (answer["code"], answer["field"]) == ("too_many_items", "batch")
    assert answer["message"] == (
        f"batch: {count} calls, over the limit of 2500 calls per batch; send several batches"
    )
    [kept] = producer.invalid()
    assert len(kept["original"]) == min(len(body), 32 * 1024)
    assert producer.records == producer.on("events.invalid")


def test_the_batch_answer_lists_at_most_100_errors_and_counts_the_rest(collector: Collector) -> None:
    client, producer = collector
    response = post(client, "/v1/batch", {"batch": [0] * 2_500})
    assert response.status_code == 200
    answer = response.json()
    assert (answer["accepted"], answer["rejected"], answer["errors_omitted"]) == (0, 2_500, 2_400)
    assert [error["index"] for error in answer["errors"]] == list(range(100))
    assert len(response.content) < 12_000
    # Every rejected item is still kept.
    assert len(producer.invalid()) == 2_500


def test_the_batch_answer_never_echoes_what_the_items_hold(collector: Collector) -> None:
    client, _ = collector
    marker = "MARKER-" + "x" * 5_000
    items = [
        {**TRACK, "userId": marker, "properties": "not an object"},
        {**TRACK, "type": marker},
        {**TRACK, "type": {"nested": marker}},
        {**TRACK, "timestamp": marker},
    ]
    response = post(client, "/v1/batch", {"batch": items})
    assert response.status_code == 200
    assert response.json()["rejected"] == 4
    assert "MARKER" not in response.text
    assert all(len(error["reason"]) <= 200 for error in response.json()["errors"])


def test_the_batch_item_limit_is_configurable(collector_factory: Callable[..., Collector]) -> None:
    client, _ = collector_factory(max_batch_items=2)
    assert post(client, "/v1/batch", {"batch": [TRACK, TRACK]}).status_code == 200
    assert post(client, "/v1/batch", {"batch": [TRACK, TRACK, TRACK]}).json()["code"] == "too_many_items"


# -- rate limit per write key ------------------------------------------------------------------------


def test_over_the_rate_a_key_gets_429_with_retry_after(collector_factory: Callable[..., Collector]) -> None:
    # 0.01 calls/s: the burst is one call, and refilling one takes 100 s, far longer than the test.
    client, producer = collector_factory(collector_rate_limit_per_s=0.01)
    assert post(client, "/v1/track", TRACK).status_code == 200
    limited = post(client, "/v1/track", TRACK)
    assert limited.status_code == 429
    assert 99 <= int(limited.headers["Retry-After"]) <= 100
    assert limited.json() == {
        "success": False,
        "code": "rate_limited",
        "message": "over the rate limit of 0.01 calls per second for this write key; retry in "
        f"{limited.headers['Retry-After']} s",
    }
    assert b"\n" not in limited.content
    assert len(producer.records) == 1
    # Another write key has its own budget.
    assert post(client, "/v1/track", TRACK, key=APP_KEY).status_code == 200


def test_a_batch_counts_each_of_its_calls(collector_factory: Callable[..., Collector]) -> None:
    client, _ = collector_factory(collector_rate_limit_per_s=0.01)
    assert post(client, "/v1/batch", {"batch": [TRACK] * 3}).status_code == 200
    limited = post(client, "/v1/batch", {"batch": [TRACK]})
    assert limited.status_code == 429
    # Three calls spent from a bucket of one: 2 of debt and the one asked for, at 0.01 a second.
    assert 299 <= int(limited.headers["Retry-After"]) <= 300


def test_whole_refusals_count_against_the_rate_and_stop_being_kept(
    collector_factory: Callable[..., Collector],
) -> None:
    client, producer = collector_factory(collector_rate_limit_per_s=0.01)
    assert post(client, "/v1/batch", b"{not json").status_code == 400
    assert len(producer.invalid()) == 1
    assert post(client, "/v1/batch", b"{not json").status_code == 429
    assert post(client, "/v1/track", TRACK).status_code == 429
    assert len(producer.records) == 1


def test_rate_zero_disables_the_limit(collector_factory: Callable[..., Collector]) -> None:
    client, _ = collector_factory(collector_rate_limit_per_s=0)
    for _ in range(5):
        assert post(client, "/v1/track", TRACK).status_code == 200


# -- write keys ----------------------------------------------------------------------------------


def test_a_write_key_is_compared_with_every_key_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {f"wk_constant_{n:04d}": Source(name=f"s{n}", channel="web") for n in range(5)}
    intake = Intake(Settings(_env_file=None, sources=keys))
    compared: list[tuple[bytes, bytes]] = []
    real_compare_digest = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real_compare_digest(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    for candidate in ("wk_constant_0000", "wk_constant_0004", "wk_unknown_0000"):
        compared.clear()
        try:
            intake.authenticate(candidate, None)
        except CollectorError as exc:
            assert exc.status == 401
        # As SHA-256 digests: the comparison does not reveal the keys' lengths either.
        assert sorted(known for _, known in compared) == sorted(
            hashlib.sha256(key.encode()).digest() for key in keys
        )
    assert intake.authenticate("wk_constant_0003", None).source.name == "s3"
    assert intake.authenticate(None, {"writeKey": "wk_constant_0003"}).write_key == "wk_constant_0003"


def test_a_non_ascii_write_key_is_401_not_500(collector: Collector) -> None:
    client, producer = collector
    key = "wk_ünïcødé_0001"
    assert post(client, "/v1/track", TRACK, key=key).status_code == 401
    assert post(client, "/v1/track", {**TRACK, "writeKey": key}, key=None).status_code == 401
    assert producer.records == []


# -- gzip and deflate streams ----------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_compressed_body_with_trailing_bytes_is_400(
    collector: Collector, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    client, producer = collector
    body = compress(orjson.dumps(TRACK)) + b"garbage"
    response = post(client, "/v1/track", body, **{"Content-Encoding": encoding})
    assert response.status_code == 400
    assert response.json()["message"] == f"the {encoding} body has 7 bytes after the end of its stream"
    assert producer.on("events.web") == []
    [kept] = producer.invalid()
    assert kept["original"] == body


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)])
def test_a_truncated_compressed_body_is_400(
    collector: Collector, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    client, producer = collector
    whole = compress(orjson.dumps({"batch": [TRACK] * 20}))
    for cut in (len(whole) - 4, len(whole) // 2, 12):
        response = post(client, "/v1/batch", whole[:cut], **{"Content-Encoding": encoding})
        assert response.status_code == 400, cut
        assert "truncated" in response.json()["message"] or "corrupt" in response.json()["message"]
    assert producer.on("events.web") == []
    assert post(client, "/v1/batch", whole, **{"Content-Encoding": encoding}).status_code == 200


def test_two_gzip_members_are_refused_not_half_read(collector: Collector) -> None:
    client, producer = collector
    body = gzip.compress(orjson.dumps(TRACK)) + gzip.compress(orjson.dumps(TRACK))
    response = post(client, "/v1/track", body, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert producer.on("events.web") == []


# -- whole refusals kept on events.invalid --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/track", b'{"userId": ', "invalid_json"),
        ("/v1/track", b"[1, 2]", "invalid_json"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', "invalid_request"),
        ("/v1/batch", b"", "invalid_json"),
        ("/v1/b", b'"just a string"', "invalid_json"),
    ],
)
def test_a_request_refused_whole_is_kept_with_its_reason(
    collector: Collector, path: str, body: bytes, code: str
) -> None:
    client, producer = collector
    response = post(client, path, body)
    assert response.status_code == 400 and response.json()["code"] == code
    [kept] = producer.invalid()
    assert kept["stage"] == "collector" and kept["source"] == "shop-web"
    assert kept["reason"] == response.json()["message"]
    assert kept["position"] is None and kept["original"] == body
    assert producer.records[0].key == b"shop-web"


def test_a_refused_body_is_kept_cut_to_the_event_limit(collector_factory: Callable[..., Collector]) -> None:
    client, producer = collector_factory(max_event_bytes=1024)
    body = b'{"batch": "' + b"x" * 5000 + b'"}'
    assert post(client, "/v1/batch", body).status_code == 400
    [kept] = producer.invalid()
    assert kept["original"] == body[:1024]
    assert kept["reason"].endswith(f"(the first 1024 of {len(body)} bytes are kept)")


def test_a_compressed_body_refused_after_decoding_is_kept_decoded(collector: Collector) -> None:
    client, producer = collector
    plain = b'{"batch": ["not", "a", "call"], "writeKey": 5'
    assert post(client, "/v1/batch", gzip.compress(plain), **{"Content-Encoding": "gzip"}).status_code == 400
    [kept] = producer.invalid()
    assert kept["original"] == plain


def test_a_body_write_key_refusal_is_kept_once_the_key_is_read(collector: Collector) -> None:
    client, producer = collector
    body = orjson.dumps({"writeKey": APP_KEY, "batch": "nope"})
    assert post(client, "/v1/batch", body, key=None).status_code == 400
    [kept] = producer.invalid()
    assert kept["source"] == "shop-app"


def test_refusals_without_a_known_write_key_or_not_400_are_not_kept(collector: Collector) -> None:
    client, producer = collector
    assert post(client, "/v1/batch", b"{not json", key=None).status_code == 400
    assert post(client, "/v1/batch", b"{not json", key="wk_nobody_00000").status_code == 401
    assert post(client, "/v1/track", b"x" * 40_000).status_code == 413
    assert post(client, "/v1/track", b"xx", **{"Content-Encoding": "br"}).status_code == 415
    assert producer.records == []
