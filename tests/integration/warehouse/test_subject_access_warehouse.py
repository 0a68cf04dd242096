"""Subject access on ClickHouse 18.16 and chDB: Ann, merged from a web cookie, a store loyalty card and
her email, gets every row of hers from every table, events newest first across pages, and nothing of
Dan, who shares the warehouse (and once had an identifier and an event that were hers first)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.dev.stack import clickhouse_client
from streams.domain.audiences.hashing import AudienceIdKind, Platform, hash_identifier
from streams.domain.identifiers import Identifier, IdKind
from streams.domain.subject_access import FORMAT
from streams.settings import Settings
from streams.warehouse import migrations, privacy_requests
from streams.warehouse.persons import PersonNotFound
from streams.warehouse.sql_text import quote
from streams.warehouse.subject_access import prepare, record_request
from tests.integration.warehouse.chdb_client import ChdbClient

pytestmark = pytest.mark.integration

# Ann: web cookie (A) and store loyalty card (B), both merged into her email person C.
A, B, C = "pid-ann-web", "pid-ann-store", "pid-ann-email"
DAN, DAN_OLD = "pid-dan", "pid-dan-old"
ANN_KEYS = {"anonymous_id:web-a1", "loyalty_card:LC123", "email:ann@shop.com", "customer_id:cust-42",
            "phone:+447911123456"}  # fmt: skip
ANN_EMAIL_GOOGLE = hash_identifier(Platform.GOOGLE, AudienceIdKind.EMAIL, "ann@shop.com")
ANN_PHONE_META = hash_identifier(Platform.META, AudienceIdKind.PHONE, "+447911123456")
ANN_CUSTOMER = hash_identifier(Platform.GENERIC, AudienceIdKind.EXTERNAL_ID, "cust-42")
DAN_EMAIL_META = hash_identifier(Platform.META, AudienceIdKind.EMAIL, "dan@shop.com")
# Strings that name Dan: none may appear anywhere in Ann's export.
DAN_NEEDLES = (DAN, DAN_OLD, "dan@shop.com", "cust-99", "web-d1", "shared-1", DAN_EMAIL_META, "msg-dan",
               "msg-x", "dan-only")  # fmt: skip


def _ts(text: str) -> str:
    return f"toDateTime({quote(text)})"


def _literal(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, int):
        return f"toUInt64({value})"
    if isinstance(value, str) and value.startswith("2026-"):
        return _ts(value)
    return quote(str(value))


IDENTITIES = [  # identifier, kind, value, person_id, version, first_seen
    ("anonymous_id:web-a1", "anonymous_id", "web-a1", A, 1, "2026-01-05 09:00:00"),
    ("loyalty_card:LC123", "loyalty_card", "LC123", B, 2, "2026-01-05 12:00:00"),
    ("email:ann@shop.com", "email", "ann@shop.com", C, 3, "2026-01-06 10:00:00"),
    ("customer_id:cust-42", "customer_id", "cust-42", C, 4, "2026-01-06 10:00:00"),
    ("phone:+447911123456", "phone", "+447911123456", C, 5, "2026-01-06 10:00:00"),
    ("anonymous_id:shared-1", "anonymous_id", "shared-1", A, 6, "2026-01-05 09:30:00"),
    ("anonymous_id:shared-1", "anonymous_id", "shared-1", DAN, 9, "2026-01-05 09:30:00"),  # moved to Dan
    ("email:dan@shop.com", "email", "dan@shop.com", DAN, 7, "2026-01-06 11:00:00"),
    ("customer_id:cust-99", "customer_id", "cust-99", DAN, 8, "2026-01-06 11:00:00"),
    ("anonymous_id:web-d1", "anonymous_id", "web-d1", DAN_OLD, 10, "2026-01-06 11:00:00"),
]
EVENT_COLUMNS = ("message_id, type, channel, source, event, anonymous_id, user_id, email, loyalty_card, "
                 "traits, properties, consent_categories, consent_granted, timestamp, timestamp_ms, "
                 "received_at")  # fmt: skip
EVENTS = [
    ("e1", "page", "web", "web", "", "web-a1", "", "", "", "{}", '{"path": "/shoes"}', [], [],
     "2026-01-05 09:00:00", 1767603600000, "2026-01-05 09:00:01"),
    ("e2", "track", "store", "pos", "Order Completed", "", "", "", "LC123", "{}", '{"revenue": 59.9}', [], [],
     "2026-01-05 12:00:00", 1767614400000, "2026-01-05 12:00:01"),
    ("e3", "identify", "web", "web", "", "web-a1", "cust-42", " Ann@Shop.com ", "",
     '{"email": "Ann@Shop.com", "name": "Ann"}', "{}", ["Advertising", "Analytics"], [1, 0],
     "2026-01-06 10:00:00", 1767693600000, "2026-01-06 10:00:01"),
    ("e4", "track", "email", "esp", "Email Opened", "", "", "ann@shop.com", "", "{}", "{}", ["advertising"],
     [0], "2026-01-06 11:00:00", 1767697200000, "2026-01-06 11:00:01"),
    ("e5", "page", "web", "web", "", "web-a1", "", "", "", "{}", "not json {", [], [],
     "2026-01-06 11:00:00", 1767697200000, "2026-01-06 11:00:02"),  # same second as e4
    ("msg-dan", "track", "web", "web", "Signed In", "web-d1", "cust-99", "dan@shop.com", "", "{}",
     '{"note": "dan-only"}', ["advertising"], [1], "2026-01-06 11:00:00", 1767697200000,
     "2026-01-06 11:00:01"),
    ("msg-x", "page", "web", "web", "", "shared-1", "", "", "", "{}", "{}", [], [],
     "2026-01-05 09:30:00", 1767605400000, "2026-01-05 09:30:01"),
]  # fmt: skip
RESOLUTIONS = [  # message_id, channel, type, person_id, identifiers, timestamp, received_at, resolved_at
    ("e1", "web", "page", A, ["anonymous_id:web-a1"], "2026-01-05 09:00:00", "2026-01-05 09:00:01"),
    ("e2", "store", "track", B, ["loyalty_card:LC123"], "2026-01-05 12:00:00", "2026-01-05 12:00:01"),
    ("e3", "web", "identify", C, ["email:ann@shop.com", "customer_id:cust-42"], "2026-01-06 10:00:00",
     "2026-01-06 10:00:01"),
    ("e4", "email", "track", C, ["email:ann@shop.com"], "2026-01-06 11:00:00", "2026-01-06 11:00:01"),
    ("e5", "web", "page", A, ["anonymous_id:web-a1"], "2026-01-06 11:00:00", "2026-01-06 11:00:02"),
    ("msg-dan", "web", "track", DAN, ["customer_id:cust-99"], "2026-01-06 11:00:00",
     "2026-01-06 11:00:01"),
    # Resolved to Dan first; the later resolution to Ann's A is a superseded copy (0007: first wins).
    ("msg-x", "web", "page", DAN, ["anonymous_id:shared-1"], "2026-01-05 09:30:00", "2026-01-05 09:30:01"),
    ("msg-x", "web", "page", A, ["anonymous_id:shared-1"], "2026-01-05 09:30:00", "2026-01-05 09:30:01"),
]  # fmt: skip
INSERTS: list[tuple[str, str, list[tuple[Any, ...]]]] = [
    ("identities", "identifier, kind, value, person_id, version, first_seen", IDENTITIES),
    ("person_aliases", "person_id, canonical_person_id, change_id, version",
     [(A, C, "c1", 100), (B, C, "c2", 200), (DAN_OLD, DAN, "c3", 300)]),
    ("identity_merges", "change_id, person_id, merged_person_id, merged_person_ids, identifiers, reason, "
     "message_id, channel, at, at_ms", [
        ("c1", C, A, [A], ["anonymous_id:web-a1"], "shared identifier", "e3", "web", "2026-01-06 10:00:01",
         1767693601000),
        ("c2", C, B, [B], ["loyalty_card:LC123"], "shared identifier", "e2b", "store", "2026-01-06 10:30:00",
         1767695400000),
        ("c3", DAN, DAN_OLD, [DAN_OLD], ["anonymous_id:web-d1"], "shared identifier", "msg-dan", "web",
         "2026-01-06 11:00:01", 1767697201000),
    ]),
    ("identity_rejections", "change_id, person_id, identifier, identifiers, conflicting_person_id, reason, "
     "message_id, channel, at, at_ms", [
        ("r1", C, "customer_id:cust-43", ["customer_id:cust-43"], "", "limit", "e4", "email",
         "2026-01-06 11:00:01", 1767697201000),
        ("r2", DAN, "customer_id:cust-98", ["customer_id:cust-98"], "", "limit", "msg-dan", "web",
         "2026-01-06 11:00:01", 1767697201000),
    ]),
    ("events", EVENT_COLUMNS, EVENTS + EVENTS[:1]),  # e1 delivered twice
    ("event_persons", "message_id, channel, type, person_id, identifiers, timestamp, received_at, "
     "resolved_at", [(*r, r[-1]) for r in RESOLUTIONS[:-1]]
     + [(*RESOLUTIONS[-1], "2026-01-05 09:40:00")]),
    ("segment_changes", "change_id, person_id, segment_id, subject, change, seq, at, at_ms, trigger, "
     "reason, message_id, email", [
        ("s1", A, "visitors", "", "entered", 1, "2026-01-05 09:00:02", 1767603602000, "event", "", "e1", ""),
        ("s2", A, "visitors", "", "exited", 2, "2026-01-06 10:00:02", 1767693602000, "merge", "", "e3", ""),
        ("s3", C, "vip", "", "entered", 1, "2026-01-06 10:00:02", 1767693602000, "event", "", "e3",
         "ann@shop.com"),
        ("s4", C, "already-purchased", "product:P1", "entered", 1, "2026-01-06 10:30:01", 1767695401000,
         "event", "", "e2", "ann@shop.com"),
        ("s5", C, "lapsed", "", "entered", 1, "2026-01-06 10:00:02", 1767693602000, "event", "", "e3", ""),
        ("s6", C, "lapsed", "", "exited", 2, "2026-01-06 11:00:02", 1767697202000, "event", "", "e4", ""),
        ("s7", DAN, "vip", "", "entered", 1, "2026-01-06 11:00:02", 1767697202000, "event", "", "msg-dan",
         "dan@shop.com"),
    ]),
    ("audience_members", "destination_id, audience_id, kind, hash, added, kafka_offset, at, at_ms", [
        ("google-ads", "vip", "email", ANN_EMAIL_GOOGLE, 1, 1, "2026-01-06 10:00:03", 1767693603000),
        ("google-ads", "vip", "email", ANN_EMAIL_GOOGLE, 0, 5, "2026-01-06 12:00:00", 1767700800000),
        ("meta", "vip", "phone", ANN_PHONE_META, 1, 2, "2026-01-06 10:00:03", 1767693603000),
        ("meta", "vip", "email", DAN_EMAIL_META, 1, 3, "2026-01-06 11:00:03", 1767697203000),
        ("crm", "vip", "external_id", ANN_CUSTOMER, 1, 4, "2026-01-06 10:00:03", 1767693603000),
    ]),
    ("usecase_exposures", "usecase_id, version, person_id, arm, at, at_ms, segment_id, subject, change_id", [
        ("uc1", 1, A, "control", "2026-01-05 09:00:02", 1767603602000, "visitors", "", "s1"),
        ("uc1", 1, DAN, "treatment", "2026-01-06 11:00:02", 1767697202000, "vip", "", "s7"),
    ]),
]  # fmt: skip


def _load(execute: Any) -> None:
    for table, columns, rows in INSERTS:
        for row in rows:  # one row per INSERT: literal types need not agree across rows
            execute(f"INSERT INTO {table} ({columns}) SELECT {', '.join(_literal(v) for v in row)}")


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "chdb":
        backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "access")
        try:
            migrations.apply(backend, "access")
            chdb = ChdbClient(backend)
            _load(chdb.execute)
            yield chdb
        finally:
            backend.close()
        return
    settings: Settings = request.getfixturevalue("settings_factory")()
    driver = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _load(driver.execute)
        yield driver
    finally:
        driver.disconnect()


def _export(client: Any, key: str, **options: Any) -> dict[str, Any]:
    kind, _, value = key.partition(":")
    found = prepare(client, Identifier(IdKind(kind), value), request_id="access-test", **options)
    return json.loads("".join(found.chunks()))


def _column(section: dict[str, Any], name: str) -> list[Any]:
    return [row[name] for row in section["rows"]]


def test_every_section_holds_exactly_the_persons_rows(client: Any) -> None:
    doc = _export(client, "email:ann@shop.com")
    assert doc["format"] == FORMAT and doc["generated_at"].endswith("Z")
    assert doc["person_id"] == C and sorted(doc["merged_person_ids"]) == sorted([A, B])
    assert {row["identifier"] for row in doc["identifiers"]["rows"]} == ANN_KEYS
    assert doc["identifiers"]["source"] == "identities"
    assert sorted(_column(doc["person_aliases"], "change_id")) == ["c1", "c2"]
    assert _column(doc["merges"], "change_id") == ["c1", "c2"]
    assert doc["merges"]["rows"][0]["merged_person_ids"] == [A]
    assert _column(doc["rejections"], "change_id") == ["r1"]
    assert [(r["message_id"], r["category"], r["granted"]) for r in doc["consent"]["rows"]] == [
        ("e3", "Advertising", 1),
        ("e3", "Analytics", 0),
        ("e4", "advertising", 0),
    ]
    assert _column(doc["segment_history"], "change_id") == ["s1", "s5", "s3", "s2", "s4", "s6"]
    assert doc["segment_history"]["source"] == "segment_changes"
    assert [(r["segment_id"], r["subject"]) for r in doc["segments_current"]["rows"]] == [
        ("already-purchased", "product:P1"),
        ("vip", ""),
    ]
    audiences = doc["audiences"]["rows"]
    assert [(r["destination_id"], r["kafka_offset"], r["added"]) for r in audiences] == [
        ("crm", 4, 1),
        ("google-ads", 1, 1),
        ("google-ads", 5, 0),
        ("meta", 2, 1),
    ]
    assert {"identifier": "phone:+447911123456", "platform": "meta_custom_audience"} in audiences[3][
        "matched_by"
    ]
    assert [(r["usecase_id"], r["person_id"], r["arm"]) for r in doc["usecase_exposures"]["rows"]] == [
        ("uc1", A, "control")
    ]
    events = doc["events"]
    assert events["source"] == "events" and events["total"] == 5 and not events["truncated"]
    assert _column(events, "message_id") == ["e5", "e4", "e3", "e2", "e1"]  # newest first, e1 once
    e3 = events["rows"][2]
    assert e3["traits"] == {"email": "Ann@Shop.com", "name": "Ann"} and e3["email"] == " Ann@Shop.com "
    assert (
        e3["consent_categories"] == ["Advertising", "Analytics"] and e3["timestamp"] == "2026-01-06T10:00:00Z"
    )
    assert events["rows"][0]["properties"] == "not json {"
    stored = [
        str(row[0])
        for row in client.execute("DESCRIBE TABLE events")
        if str(row[2]) not in ("MATERIALIZED", "ALIAS")
    ]
    assert list(e3) == stored  # every stored column, in table order
    text = json.dumps(doc)
    assert [needle for needle in DAN_NEEDLES if needle in text] == []


def test_consent_section_equals_the_consent_statements_view(client: Any) -> None:
    doc = _export(client, "loyalty_card:LC123")
    view = client.execute(
        "SELECT message_id, category, granted FROM consent_statements WHERE person_id IN %(ids)s "
        "ORDER BY timestamp_ms, message_id, category",
        {"ids": (A, B, C)},
    )
    assert [(r["message_id"], r["category"], r["granted"]) for r in doc["consent"]["rows"]] == [
        tuple(row) for row in view
    ]


def test_events_come_in_pages_newest_first_and_each_once(client: Any) -> None:
    whole = _export(client, "email:ann@shop.com")["events"]["rows"]
    for page in (1, 2, 3):
        assert _export(client, "email:ann@shop.com", page=page)["events"]["rows"] == whole
    capped = _export(client, "email:ann@shop.com", max_events=2, page=1)["events"]
    assert _column(capped, "message_id") == ["e5", "e4"]
    assert capped["truncated"] and capped["total"] == 5 and "2 of 5" in capped["note"]


def test_the_other_person_gets_their_own_rows(client: Any) -> None:
    doc = _export(client, "customer_id:cust-99")
    assert doc["person_id"] == DAN and doc["merged_person_ids"] == [DAN_OLD]
    assert "anonymous_id:shared-1" in {row["identifier"] for row in doc["identifiers"]["rows"]}
    assert _column(doc["events"], "message_id") == ["msg-dan", "msg-x"]
    assert [r["hash"] for r in doc["audiences"]["rows"]] == [DAN_EMAIL_META]
    text = json.dumps(doc)
    assert [needle for needle in ("ann@shop.com", A, B, C, "LC123", "cust-42") if needle in text] == []


def test_unknown_identifier_is_not_found(client: Any) -> None:
    with pytest.raises(PersonNotFound, match=r"email:nobody@shop\.com"):
        _export(client, "email:nobody@shop.com")


def test_the_request_is_logged_without_personal_data(client: Any) -> None:
    kind, value = "email", "ann@shop.com"
    export = prepare(client, Identifier(IdKind(kind), value), request_id="access-log-1")
    "".join(export.chunks())
    record_request(client, export, "done")

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in client.execute(sql)]

    logged = privacy_requests.find(rows, "access-log-1")
    assert logged is not None and logged.kind == "access" and logged.status == "done"
    assert logged.receipt["sections"]["events"] == {"source": "events", "rows": 5}
    assert logged.receipt["sections"]["identifiers"]["rows"] == 5
    (subject,) = client.execute("SELECT subject FROM privacy_requests WHERE request_id = 'access-log-1'")
    assert subject[0] == hashlib.sha256(C.encode()).hexdigest()
    stored = json.dumps(client.execute("SELECT * FROM privacy_requests"), default=str)
    assert [needle for needle in ("ann", A, B, C, "cust-42", "LC123", "web-a1") if needle in stored] == []
    assert privacy_requests.active_for(rows, "access", subject[0]) is None
