"""The audience pull API against ClickHouse 18.16 (FastAPI TestClient, destinations in a temp folder):
keys and the answers for wrong ones, snapshot pages, deltas and their cursors, CSV exports, every pull
recorded, and destinations read again when their files change."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clickhouse_driver import Client
from fastapi.testclient import TestClient

from streams.api.destinations import DestinationRegistry
from streams.api.persons import create_persons_app
from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.hashing import AudienceIdKind
from streams.settings import Settings
from tests.integration.warehouse.test_audience_queries import h, insert

pytestmark = pytest.mark.integration

EMAIL, PHONE, EXTERNAL = AudienceIdKind.EMAIL, AudienceIdKind.PHONE, AudienceIdKind.EXTERNAL_ID
GOOGLE_KEY, META_KEY = secrets.token_urlsafe(32), secrets.token_urlsafe(32)


def _yaml(destination_id: str, kind: str, key: str, audiences: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (
        f"id: {destination_id}\nkind: {kind}\napi_key_sha256: {digest}\n"
        f"identifiers: [email, phone, external_id]\naudiences:\n{audiences}"
    )


GOOGLE_YAML = _yaml(
    "google", "google_customer_match", GOOGLE_KEY,
    "  - segment: vip\n  - segment: empty\n  - segment: bought\n    subjects: 'product:*'\n",
)  # fmt: skip
META_YAML = _yaml("meta", "meta_custom_audience", META_KEY, "  - segment: vip\n")


@dataclass
class Api:
    http: TestClient
    db: Client
    folder: Path
    settings: Settings

    def get(self, path: str, key: str | None = GOOGLE_KEY, **params: object) -> object:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.http.get(path, params=params, headers=headers)


@pytest.fixture
def api(settings_factory: Callable[..., Settings], tmp_path: Path) -> Iterator[Api]:
    settings = settings_factory()
    (tmp_path / "google.yaml").write_text(GOOGLE_YAML)
    (tmp_path / "meta.yml").write_text(META_YAML)
    registry = DestinationRegistry(tmp_path, check_every_s=0)
    db = clickhouse_client(settings, settings.clickhouse_database)
    log = [
        (0, Delta("google", "vip", EMAIL, h("ann"), True)),
        (1, Delta("google", "vip", PHONE, h("ann"), True)),
        (2, Delta("google", "vip", EXTERNAL, h("C-1"), True)),
        (3, Delta("meta", "vip", EMAIL, h("ann"), True)),
        (4, Delta("google", "bought/product:P1", EMAIL, h("bob"), True)),
        (5, Delta("google", "dropped", EMAIL, h("bob"), True)),
    ]
    log += [(6 + n, Delta("google", "vip", EMAIL, h(f"person-{n}"), True)) for n in range(40)]
    insert(db, log)
    with TestClient(create_persons_app(settings, destinations=registry)) as http:
        yield Api(http, db, tmp_path, settings)
    db.disconnect()


def pulls(api: Api) -> list[tuple[str, str, str, int, int, int]]:
    return [
        tuple(row)
        for row in api.db.execute(
            "SELECT destination_id, audience_id, operation, rows, cursor_from, cursor_to FROM audience_pulls "
            "ORDER BY at, operation, rows"
        )
    ]


def test_keys_destinations_and_audiences_are_checked(api: Api) -> None:
    url = "/v1/destinations/google/audiences/vip/snapshot"
    for key in (None, "nope", META_KEY + "x"):
        reply = api.get(url, key=key)
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    basic = api.http.get(url, headers={"Authorization": f"Basic {GOOGLE_KEY}"})
    assert basic.status_code == 401
    other = api.get(url, key=META_KEY)
    assert other.status_code == 403 and other.json() == {
        "detail": "this API key is not destination 'google''s"
    }
    assert api.get("/v1/destinations/nowhere/audiences").status_code == 403
    unread = api.get("/v1/destinations/google/audiences/lapsed/snapshot")
    assert (
        unread.status_code == 403 and unread.json()["detail"] == "destination 'google' does not read 'lapsed'"
    )
    assert api.get("/v1/destinations/google/audiences/dropped/deltas", cursor="0").status_code == 403
    unknown = api.get("/v1/destinations/google/audiences/Not An Id/snapshot")
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no such audience: ")
    assert "\n" not in unknown.json()["detail"]
    assert api.get("/v1/destinations/google/audiences/vip/product:P1/snapshot").status_code == 403
    too_big = api.get(url, page_size=0)
    assert too_big.status_code == 422 and too_big.json()["detail"].startswith("page_size: ")
    assert pulls(api) == []  # refused requests read nothing


def test_list_snapshot_pages_and_deltas(api: Api) -> None:
    listed = api.get("/v1/destinations/google/audiences").json()
    assert listed == {
        "destination_id": "google",
        "cursor": "46",
        "audiences": [
            {"audience_id": "bought/product:P1", "members": 1},
            {"audience_id": "empty", "members": 0},
            {"audience_id": "vip", "members": 43},
        ],
    }
    url = "/v1/destinations/google/audiences/vip/snapshot"
    first = api.get(url, page_size=5).json()
    assert first["done"] is False and first["cursor"] is None
    found = [(m["kind"], m["hash"]) for m in first["members"]]
    # Written while the snapshot is paged: not in it, but in the deltas from its cursor.
    insert(api.db, [(46, Delta("google", "vip", EMAIL, h("ann"), False))])
    insert(api.db, [(47, Delta("google", "vip", EMAIL, h("eve"), True))])
    token, pages, cursor = first["next_page_token"], 1, None
    while token is not None:
        page = api.get(url, page_token=token).json()
        found += [(m["kind"], m["hash"]) for m in page["members"]]
        token, pages, cursor = page["next_page_token"], pages + 1, page["cursor"]
    assert pages == 9 and cursor == "46"  # ceil(43 / 5) ranges
    assert len(found) == 43 and ("email", h("ann")) in found and ("external_id", h("C-1")) in found

    deltas_url = "/v1/destinations/google/audiences/vip/deltas"
    first_delta = api.get(deltas_url, cursor=cursor, limit=1).json()
    assert first_delta == {
        "add": [],
        "remove": [{"kind": "email", "hash": h("ann")}],
        "cursor": "47",
        "more": True,
    }
    rest = api.get(deltas_url, cursor="47").json()
    assert rest == {"add": [{"kind": "email", "hash": h("eve")}], "remove": [], "cursor": "48", "more": False}
    assert api.get(deltas_url, cursor="48").json()["cursor"] == "48"

    empty = api.get("/v1/destinations/google/audiences/empty/snapshot").json()
    assert empty == {"members": [], "next_page_token": None, "done": True, "cursor": "48"}
    subject = api.get("/v1/destinations/google/audiences/bought/product:P9/snapshot").json()
    assert subject["members"] == [] and subject["done"] is True

    recorded = pulls(api)
    assert [row for row in recorded if row[2] == "list"] == [("google", "", "list", 3, 46, 46)]
    snapshots = [row for row in recorded if row[2] == "snapshot" and row[1] == "vip"]
    assert len(snapshots) == 9 and sum(row[3] for row in snapshots) == 43
    assert {row[4:] for row in snapshots} == {(46, 46)}
    assert sorted(row for row in recorded if row[2] == "deltas") == [
        ("google", "vip", "deltas", 0, 48, 48),
        ("google", "vip", "deltas", 1, 46, 47),
        ("google", "vip", "deltas", 1, 47, 48),
    ]
    assert len(recorded) == 1 + 9 + 3 + 2
    clients = api.db.execute("SELECT DISTINCT client FROM audience_pulls")
    assert clients == [("testclient",)]


@pytest.mark.parametrize(
    ("cursor", "status", "says"),
    [
        ("abc", 400, "is not a cursor of this API; take a new snapshot when in doubt"),
        ("-1", 400, "is not a cursor of this API"),
        ("007", 400, "is not a cursor of this API"),
        ("99999999999999999999", 400, "is not a cursor of this API"),
        ("47", 400, "is ahead of the newest delta (cursor 46); take a new snapshot when in doubt"),
        ("2", 410, "cursor 2 is older than the retained deltas (oldest cursor 3); take a new snapshot"),
    ],
)
def test_cursor_errors(api: Api, cursor: str, status: int, says: str) -> None:
    api.db.execute("INSERT INTO audience_retention (retained_from, reason) VALUES", [(3, "test")])
    reply = api.get("/v1/destinations/google/audiences/vip/deltas", cursor=cursor)
    assert reply.status_code == status and says in reply.json()["detail"]
    token_reply = api.get("/v1/destinations/google/audiences/vip/snapshot", page_token="bm9wZQ")
    assert token_reply.status_code == 400 and "not a page token" in token_reply.json()["detail"]


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_exports_stream_the_platforms_csv(api: Api) -> None:
    reply = api.get("/v1/destinations/google/audiences/vip/export")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    assert reply.headers["content-disposition"] == 'attachment; filename="google-vip-46-google.csv"'
    rows = _csv(reply.text)
    assert rows[0] == ["Email", "Phone"]
    assert ["", h("ann")] in rows and [h("ann"), ""] in rows
    assert len(rows) == 1 + 42  # the external id has no column in Google's format
    meta = api.get("/v1/destinations/meta/audiences/vip/export", key=META_KEY, format="meta")
    assert _csv(meta.text) == [["email", "phone", "madid", "extern_id"], [h("ann"), "", "", ""]]
    wrong = api.get("/v1/destinations/google/audiences/vip/export", format="meta")
    assert wrong.status_code == 400
    assert wrong.json()["detail"] == (
        "the destination's hashes follow google_customer_match rules; export it as format google"
    )
    subject = api.get("/v1/destinations/google/audiences/bought/product:P1/export")
    assert (
        subject.headers["content-disposition"]
        == 'attachment; filename="google-bought_product_P1-46-google.csv"'
    )
    assert _csv(subject.text) == [["Email", "Phone"], [h("bob"), ""]]
    exported = [row for row in pulls(api) if row[2] == "export"]
    assert sorted(exported) == [
        ("google", "bought/product:P1", "export", 1, 46, 46),
        ("google", "vip", "export", 42, 46, 46),
        ("meta", "vip", "export", 1, 46, 46),
    ]


def test_destinations_are_read_again_when_a_file_changes(api: Api) -> None:
    url = "/v1/destinations/meta/audiences"
    assert api.get(url, key=META_KEY).status_code == 200
    new_key = secrets.token_urlsafe(32)
    old_hash, new_hash = (hashlib.sha256(key.encode()).hexdigest() for key in (META_KEY, new_key))
    (api.folder / "meta.yml").write_text(META_YAML.replace(old_hash, new_hash))
    assert api.get(url, key=META_KEY).status_code == 401
    assert api.get(url, key=new_key).status_code == 200
    (api.folder / "broken.yaml").write_text("id: Bad Id\n")  # does not validate: the previous set stays
    assert api.get(url, key=new_key).status_code == 200
    assert api.get("/v1/destinations/google/audiences").status_code == 200


def test_clickhouse_down_is_503_in_one_line(api: Api, tmp_path: Path) -> None:
    down = api.settings.model_copy(update={"clickhouse_port": free_port()})
    registry = DestinationRegistry(api.folder)
    with TestClient(create_persons_app(down, destinations=registry)) as http:
        reply = http.get(
            "/v1/destinations/google/audiences", headers={"Authorization": f"Bearer {GOOGLE_KEY}"}
        )
    assert reply.status_code == 503
    assert reply.json()["detail"] == f"ClickHouse 127.0.0.1:{down.clickhouse_port} unavailable"
