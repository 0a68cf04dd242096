"""Collector requests refused before anything is produced: auth, JSON, size, validation, encoding.

No lifespan runs here (TestClient without ``with``), so there is no producer: every case below must be
answered before producing, which is what these tests prove. Producing paths are integration tests.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from streams.api.collector import create_app
from streams.settings import Settings, Source

WRITE_KEY = "wk_unit_web_0001"


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
def settings() -> Settings:
    return Settings(
        kafka_bootstrap="127.0.0.1:1",
        sources={WRITE_KEY: Source(name="unit-web", channel="web")},
        max_event_bytes=2048,
        max_batch_bytes=8192,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    yield TestClient(create_app(settings))


def post(client: TestClient, path: str, body: Any, key: str | None = WRITE_KEY, **kw: Any) -> Any:
    headers = basic(key) if key else {}
    headers.update(kw.pop("headers", {}))
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, content=content, headers=headers, **kw)


TRACK = {"type": "track", "userId": "u1", "event": "Viewed", "messageId": "m1"}


def test_missing_write_key_is_401_with_instructions(client: TestClient) -> None:
    response = post(client, "/v1/track", TRACK, key=None)
    assert response.status_code == 401
    body = response.json()
    assert body["success"] is False and body["code"] == "unauthorized"
    assert "missing write key" in body["message"] and "Basic" in body["message"]


def test_unknown_write_key_is_401(client: TestClient) -> None:
    response = post(client, "/v1/batch", {"batch": [TRACK]}, key="wk_nobody_000000")
    assert response.status_code == 401
    assert response.json()["message"] == "unknown write key; check the source's write key"


def test_unknown_write_key_in_body_is_401(client: TestClient) -> None:
    response = post(client, "/v1/track", {**TRACK, "writeKey": "wk_nobody_000000"}, key=None)
    assert response.status_code == 401


def test_bearer_and_broken_basic_auth_are_401(client: TestClient) -> None:
    bearer = post(client, "/v1/track", TRACK, key=None, headers={"Authorization": "Bearer abc"})
    assert bearer.status_code == 401 and "unsupported Authorization scheme" in bearer.json()["message"]
    broken = post(client, "/v1/track", TRACK, key=None, headers={"Authorization": "Basic !!notbase64"})
    assert broken.status_code == 401 and "not valid base64" in broken.json()["message"]


def test_bad_header_key_is_401_even_with_good_body_key(client: TestClient) -> None:
    response = post(client, "/v1/track", {**TRACK, "writeKey": WRITE_KEY}, key="wk_nobody_000000")
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch", "/v1/import"])
def test_malformed_json_is_400_saying_so(client: TestClient, path: str) -> None:
    response = post(client, path, b'{"userId": "u1", "event": ')
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_json"
    assert body["message"].startswith("the request body is not valid JSON")


def test_json_that_is_not_an_object_is_400(client: TestClient) -> None:
    response = post(client, "/v1/identify", b"[1, 2]")
    assert response.status_code == 400
    assert response.json()["message"] == "the request body must be a JSON object, got list"


def test_empty_body_is_400(client: TestClient) -> None:
    response = post(client, "/v1/page", b"")
    assert response.status_code == 400 and "empty" in response.json()["message"]


def test_wrong_type_names_the_field(client: TestClient) -> None:
    response = post(client, "/v1/track", {**TRACK, "properties": [1, 2]})
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "properties"
    assert body["message"] == "properties: Input should be a valid dictionary"


def test_nested_wrong_type_names_the_path(client: TestClient) -> None:
    response = post(client, "/v1/page", {"userId": "u1", "context": {"page": {"url": 5}}})
    assert response.status_code == 400
    assert response.json()["field"] == "context.page.url"


def test_bad_timestamp_names_the_field(client: TestClient) -> None:
    response = post(client, "/v1/track", {**TRACK, "timestamp": "yesterday"})
    assert response.status_code == 400
    assert response.json()["field"] == "timestamp"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/track", {"event": "Viewed"}, "userId"),
        ("/v1/identify", {"anonymousId": "   "}, "userId"),
        ("/v1/track", {"userId": "u1"}, "event"),
        ("/v1/alias", {"userId": "u1"}, "previousId"),
        ("/v1/group", {"userId": "u1"}, "groupId"),
    ],
)
def test_missing_required_identifier_is_400(
    client: TestClient, path: str, body: dict[str, Any], field: str
) -> None:
    response = post(client, path, body)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert response.json()["message"].startswith(f"{field}: ")


def test_event_over_the_limit_is_413_from_content_length(client: TestClient) -> None:
    big = {**TRACK, "properties": {"blob": "x" * 3000}}
    response = post(client, "/v1/track", big)
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "payload_too_large"
    assert "over the limit of 2048 bytes" in body["message"]


def test_event_over_the_limit_is_413_without_content_length(client: TestClient) -> None:
    payload = orjson.dumps({**TRACK, "properties": {"blob": "x" * 3000}})

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 500):
            yield payload[start : start + 500]

    response = client.post("/v1/track", content=chunks(), headers=basic(WRITE_KEY))
    assert response.status_code == 413
    assert "more than 2048" in response.json()["message"]


def test_batch_over_the_limit_is_413(client: TestClient) -> None:
    batch = {"batch": [{**TRACK, "messageId": f"m{i}", "properties": {"n": "y" * 100}} for i in range(80)]}
    response = post(client, "/v1/batch", batch)
    assert response.status_code == 413
    assert "the batch is" in response.json()["message"]
    assert "8192" in response.json()["message"]


def test_gzip_bomb_is_413_and_corrupt_gzip_is_400(client: TestClient) -> None:
    bomb = gzip.compress(b'{"batch": [' + b" " * 100_000 + b"]}")
    assert len(bomb) < 8192
    response = post(client, "/v1/batch", bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed batch" in response.json()["message"]
    corrupt = post(client, "/v1/batch", b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})
    assert corrupt.status_code == 400 and "corrupt" in corrupt.json()["message"]


def test_gzip_body_is_decoded_before_validation(client: TestClient) -> None:
    body = gzip.compress(orjson.dumps({**TRACK, "properties": "nope"}))
    response = post(client, "/v1/track", body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()["field"] == "properties"


def test_unknown_content_encoding_is_415(client: TestClient) -> None:
    response = post(client, "/v1/track", b"xx", headers={"Content-Encoding": "br"})
    assert response.status_code == 415


def test_batch_without_a_batch_array_is_400(client: TestClient) -> None:
    response = post(client, "/v1/batch", {"batch": {"type": "track"}})
    assert response.status_code == 400
    assert response.json()["field"] == "batch"


def test_valid_call_without_a_producer_is_503_never_200(client: TestClient) -> None:
    response = post(client, "/v1/track", TRACK)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json()["code"] == "unavailable"


def test_health_and_ready_without_a_producer_are_503(client: TestClient) -> None:
    for path in ("/health", "/ready"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"


def test_openapi_documents_every_endpoint_and_body(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for call in ("track", "identify", "page", "screen", "alias", "group"):
        operation = spec["paths"][f"/v1/{call}"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/SegmentCall"
        assert operation["security"] == [{"writeKey": []}]
        assert {"200", "400", "401", "413", "503"} <= set(operation["responses"])
    for path in ("/v1/batch", "/v1/import"):
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref == "#/components/schemas/BatchRequest"
    schemas = spec["components"]["schemas"]
    assert (
        schemas["BatchRequest"]["properties"]["batch"]["items"]["$ref"] == "#/components/schemas/SegmentCall"
    )
    # Every reference resolves inside the document.
    text = orjson.dumps(spec).decode()
    for name in {part.split('"')[0] for part in text.split("#/components/schemas/")[1:]}:
        assert name in schemas, name
    assert spec["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"
    assert client.get("/docs").status_code == 200
