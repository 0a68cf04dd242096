"""CORS and analytics.js's short paths on the collector, answered before anything is produced.

No lifespan runs (TestClient without ``with``), so there is no producer: a valid call is answered 503,
which proves it passed every check before producing. Delivery through a real browser is
tests/integration/api/test_collector_browser.py.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from streams.api.collector import create_app
from streams.api.cors import MAX_AGE_S
from streams.settings import Settings, Source

SHOP_KEY = "wk_cors_shop_0001"
BLOG_KEY = "wk_cors_blog_0001"
SERVER_KEY = "wk_cors_server_01"
SHOP = "https://shop.example"
BLOG = "https://blog.example"
EVIL = "https://evil.example"

TRACK = {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "m1"}


@pytest.fixture
def client() -> TestClient:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:1",
        sources={
            SHOP_KEY: Source(name="shop-web", channel="web", allowed_origins=[SHOP + "/"]),
            BLOG_KEY: Source(name="blog-web", channel="web", allowed_origins=[BLOG]),
            SERVER_KEY: Source(name="backend", channel="store"),
        },
    )
    return TestClient(create_app(settings))


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def preflight(client: TestClient, path: str, origin: str) -> Any:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


def post(client: TestClient, path: str, key: str | None, origin: str | None, body: Any = TRACK) -> Any:
    headers = {"Content-Type": "text/plain"}
    if key:
        headers.update(basic(key))
    if origin:
        headers["Origin"] = origin
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers=headers)


@pytest.mark.parametrize(
    "path", ["/v1/t", "/v1/p", "/v1/i", "/v1/s", "/v1/a", "/v1/g", "/v1/b", "/t", "/b", "/v1/track"]
)
def test_preflight_for_an_allowed_origin_is_answered_and_cached(client: TestClient, path: str) -> None:
    response = preflight(client, path, SHOP)
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(h in allowed for h in ("authorization", "content-type", "content-encoding", "x-retry-count"))
    assert response.headers["access-control-max-age"] == str(MAX_AGE_S) and MAX_AGE_S >= 600
    assert response.headers["vary"] == "Origin"


def test_preflight_is_answered_for_an_origin_any_source_allows(client: TestClient) -> None:
    # A preflight carries no write key: the blog's origin is allowed by the blog source.
    response = preflight(client, "/v1/t", BLOG)
    assert response.status_code == 204 and response.headers["access-control-allow-origin"] == BLOG


def test_preflight_for_an_origin_no_source_allows_is_refused_without_cors_headers(
    client: TestClient,
) -> None:
    response = preflight(client, "/v1/t", EVIL)
    assert response.status_code == 403
    assert "access-control-allow-origin" not in response.headers
    assert response.json()["code"] == "origin_not_allowed"
    assert EVIL in response.json()["message"] and "\n" not in response.json()["message"]


def test_no_origin_is_allowed_by_default() -> None:
    assert Source(name="s", channel="web").allowed_origins == ()
    client = TestClient(
        create_app(
            Settings(kafka_bootstrap="127.0.0.1:1", sources={SHOP_KEY: Source(name="s", channel="web")})
        )
    )
    assert preflight(client, "/v1/t", SHOP).status_code == 403
    assert post(client, "/v1/t", SHOP_KEY, SHOP).status_code == 403


def test_a_wildcard_allows_every_origin_when_asked_for() -> None:
    sources = {SHOP_KEY: Source(name="s", channel="web", allowed_origins=["*"])}
    client = TestClient(create_app(Settings(kafka_bootstrap="127.0.0.1:1", sources=sources)))
    assert preflight(client, "/v1/t", EVIL).headers["access-control-allow-origin"] == EVIL
    response = post(client, "/v1/t", SHOP_KEY, EVIL)
    assert response.status_code == 503  # past every check; no producer in this test
    assert response.headers["access-control-allow-origin"] == EVIL


@pytest.mark.parametrize("path", ["/v1/t", "/t", "/v1/track"])
def test_an_allowed_call_on_a_short_path_passes_every_check_and_carries_cors_headers(
    client: TestClient, path: str
) -> None:
    response = post(client, path, SHOP_KEY, SHOP)
    assert response.status_code == 503, response.text  # accepted as text/plain JSON; no producer here
    assert response.headers["access-control-allow-origin"] == SHOP
    assert "Retry-After" in response.headers["access-control-expose-headers"]


def test_the_batch_short_path_takes_analytics_js_batches(client: TestClient) -> None:
    batch = {
        "writeKey": SHOP_KEY,
        "batch": [{**TRACK, "writeKey": SHOP_KEY}],
        "sentAt": "2026-01-01T00:00:00Z",
    }
    for path in ("/v1/b", "/b"):
        response = post(client, path, SHOP_KEY, SHOP, batch)
        assert response.status_code == 503, response.text
        assert response.headers["access-control-allow-origin"] == SHOP


def test_a_key_used_from_an_origin_its_source_does_not_allow_is_403(client: TestClient) -> None:
    # The blog's origin is allowed by some source, so the browser may read the refusal.
    response = post(client, "/v1/t", SHOP_KEY, BLOG)
    assert response.status_code == 403
    assert response.headers["access-control-allow-origin"] == BLOG
    body = response.json()
    assert body["code"] == "origin_not_allowed" and "shop-web" in body["message"]
    assert "allowed_origins" in body["message"] and "\n" not in body["message"]


def test_the_origin_is_checked_for_a_key_in_the_body_too(client: TestClient) -> None:
    # A text/plain POST without Authorization needs no preflight: the endpoint itself must refuse.
    response = post(client, "/v1/t", None, EVIL, {**TRACK, "writeKey": SHOP_KEY})
    assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    batch = {"writeKey": SERVER_KEY, "batch": [TRACK]}
    assert post(client, "/v1/b", None, SHOP, batch).status_code == 403


def test_error_responses_carry_cors_headers_so_the_page_can_read_them(client: TestClient) -> None:
    unknown = post(client, "/v1/t", "wk_unknown_key_01", SHOP)
    assert unknown.status_code == 401 and unknown.headers["access-control-allow-origin"] == SHOP
    bad_json = post(client, "/v1/t", SHOP_KEY, SHOP, b"{not json")
    assert bad_json.status_code == 400 and bad_json.headers["access-control-allow-origin"] == SHOP
    invalid = post(client, "/v1/t", SHOP_KEY, SHOP, {"type": "track", "userId": "u1"})
    assert invalid.status_code == 400 and invalid.headers["access-control-allow-origin"] == SHOP


def test_calls_without_an_origin_are_unaffected(client: TestClient) -> None:
    response = post(client, "/v1/track", SERVER_KEY, None)
    assert response.status_code == 503 and "access-control-allow-origin" not in response.headers
    assert post(client, "/v1/t", SHOP_KEY, None).status_code == 503


def test_allowed_origins_are_normalised_and_checked() -> None:
    source = Source(
        name="s", channel="web", allowed_origins=[" HTTPS://Shop.Example:443/ ", "http://127.0.0.1:8080"]
    )
    assert source.allowed_origins == ("https://shop.example", "http://127.0.0.1:8080")
    with pytest.raises(ValidationError, match="not scheme://host"):
        Source(name="s", channel="web", allowed_origins=["shop.example"])
    with pytest.raises(ValidationError, match="not scheme://host"):
        Source(name="s", channel="web", allowed_origins=["https://shop.example/checkout"])


def test_sources_json_takes_allowed_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    sources = {SHOP_KEY: {"name": "shop", "channel": "web", "allowed_origins": [SHOP]}}
    monkeypatch.setenv("OMNISEG_SOURCES", orjson.dumps(sources).decode())
    assert Settings().sources[SHOP_KEY].allowed_origins == (SHOP,)
