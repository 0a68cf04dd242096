"""``GET /v1/persons/export`` on the read API against ClickHouse 18.16: 401 without a token, 400 for an
unusable identifier, 404 for an unknown one, 200 with every section of the person, events capped by
max_events (and said so), 503 with one line when ClickHouse is down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streams.api.destinations import DestinationRegistry
from streams.api.persons import create_persons_app
from streams.dev.process import free_port, release_port
from streams.dev.stack import clickhouse_client
from streams.domain.subject_access import FORMAT
from streams.settings import Settings
from tests.integration.warehouse.test_subject_access_warehouse import A, B, C, _load

pytestmark = pytest.mark.integration

TOKEN = "subject-access-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECTIONS = ["identifiers", "person_aliases", "merges", "rejections", "consent", "segment_history",
            "segments_current", "audiences", "usecase_exposures", "events"]  # fmt: skip


def _app(settings: Settings, tmp_path: Path) -> TestClient:
    app = create_persons_app(settings, destinations=DestinationRegistry(tmp_path, check_every_s=0))
    return TestClient(app)


def test_export_over_the_api(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings = settings_factory(api_tokens=TOKEN)
    db = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _load(db.execute)
    finally:
        db.disconnect()
    api = _app(settings, tmp_path)
    url = "/v1/persons/export"

    assert api.get(url, params={"identifier": "ann@shop.com"}).status_code == 401
    bad = api.get(url, params={"identifier": "12345"}, headers=AUTH)
    assert bad.status_code == 400 and "cannot tell the kind" in bad.json()["detail"]
    unknown = api.get(url, params={"identifier": "nobody@shop.com"}, headers=AUTH)
    assert (
        unknown.status_code == 404
        and unknown.json()["detail"] == "no person has identifier email:nobody@shop.com"
    )

    reply = api.get(url, params={"identifier": " Ann@Shop.com "}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["format"] == FORMAT and doc["person_id"] == C and sorted(doc["merged_person_ids"]) == [B, A]
    assert [key for key in doc if key in SECTIONS] == SECTIONS
    assert all(doc[name]["source"] for name in SECTIONS)
    assert [row["message_id"] for row in doc["events"]["rows"]] == ["e5", "e4", "e3", "e2", "e1"]
    assert doc["events"]["truncated"] is False

    capped = api.get(
        url, params={"identifier": "LC123", "kind": "loyalty_card", "max_events": 2}, headers=AUTH
    )
    events = capped.json()["events"]
    assert [row["message_id"] for row in events["rows"]] == ["e5", "e4"]
    assert events["truncated"] is True and events["total"] == 5 and "omniseg person export" in events["note"]
    too_many = api.get(url, params={"identifier": "ann@shop.com", "max_events": 10**6}, headers=AUTH)
    assert too_many.status_code == 422

    db = clickhouse_client(settings, settings.clickhouse_database)
    try:
        logged = db.execute(
            "SELECT kind, status FROM privacy_requests FINAL WHERE request_id = %(id)s",
            {"id": doc["request_id"]},
        )
    finally:
        db.disconnect()
    assert logged == [("access", "done")]


def test_export_is_503_in_one_line_when_clickhouse_is_down(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    closed = free_port()
    try:
        settings = settings_factory(api_tokens=TOKEN).model_copy(update={"clickhouse_port": closed})
        reply = _app(settings, tmp_path).get(
            "/v1/persons/export", params={"identifier": "ann@shop.com"}, headers=AUTH
        )
    finally:
        release_port(closed)
    assert reply.status_code == 503, reply.text
    assert reply.json()["detail"] == f"ClickHouse 127.0.0.1:{closed} unavailable"
