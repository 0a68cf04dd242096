"""Erasure end to end, on the real broker and ClickHouse with a running worker and collector.

Ann is one person merged from a web cookie, her email, an app device, her customer id and a store
loyalty card. While events carrying her cookie and email keep arriving, ``omniseg person erase
ann@shop.com --yes`` runs. Afterwards:

- no row of any ClickHouse table and no live record of a compacted topic names any of her ids or
  identifiers (the proof the erasure itself runs, run again here after the load has stopped);
- her segment exits were published on ``segments.changes`` (trigger ``erasure``, no contacts);
- later events carrying her identifiers are dropped at intake and counted;
- the request log says done, with a receipt and no personal data;
- Dan, someone else, is untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import SecretStr

from streams.api.collector import create_app
from streams.api.persons import create_persons_app
from streams.api.server import ThreadedServer
from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.audiences.hashing import AudienceIdKind, Platform, hash_identifier
from streams.privacy.compacted import live_records_naming
from streams.settings import Settings, Source
from streams.stages.segments.definitions import apply_definitions
from streams.warehouse import erasure as warehouse
from streams.wire.codecs import SEGMENT_CHANGE_CODEC
from tests.integration.faults.conftest import Worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
KEYS = {"web": "wk_erasure_web_01", "app": "wk_erasure_app_01", "store": "wk_erasure_store_1"}
SOURCES = {key: Source(name=f"erasure-{channel}", channel=channel) for channel, key in KEYS.items()}
ANN_EMAIL = "ann@shop.com"
DESTINATION = """
id: ads
kind: generic
api_key_sha256: 1e2ba3ba5bb1f2334329ef1dfafcad64c846b7e392dc832e2a39b3b7b623b204
identifiers: [email]
consent: [advertising]
audiences:
  - segment: customers
"""
ANN_HASH = hash_identifier(Platform.GENERIC, AudienceIdKind.EMAIL, ANN_EMAIL)


def _post(url: str, channel: str, calls: list[dict[str, Any]]) -> None:
    answer = httpx.post(f"{url}/v1/batch", json={"batch": calls}, auth=(KEYS[channel], ""), timeout=10)
    assert answer.status_code == 200, answer.text


def _ann_history(run: str) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        ("web", [
            {"type": "page", "messageId": f"{run}-1", "anonymousId": "web-ann", "name": "Home"},
            {"type": "identify", "messageId": f"{run}-2", "anonymousId": "web-ann",
             "traits": {"email": " Ann@Shop.com ", "firstName": "Ann"},
             "context": {"consent": {"categoryPreferences": {"advertising": True}}}},
        ]),
        ("app", [
            {"type": "identify", "messageId": f"{run}-3", "userId": "cust-ann",
             "traits": {"email": ANN_EMAIL}, "context": {"device": {"id": "dev-ann"}}},
        ]),
        ("store", [
            {"type": "track", "messageId": f"{run}-4", "userId": "cust-ann", "event": "Order Completed",
             "identifiers": {"loyaltyCard": "LC-ANN-1"},
             "properties": {"order_id": "o-1", "revenue": 25.0, "currency": "GBP",
                            "products": [{"sku": "SKU-1", "quantity": 1, "price": 25.0}]}},
        ]),
        ("web", [
            {"type": "identify", "messageId": f"{run}-5", "userId": "dan-1",
             "traits": {"email": "dan@shop.com"}},
            {"type": "track", "messageId": f"{run}-6", "userId": "dan-1", "event": "Order Completed",
             "properties": {"order_id": "o-2", "revenue": 10.0, "currency": "GBP"}},
        ]),
    ]  # fmt: skip


def _wait_for(what: str, check: Callable[[], bool], worker: Worker, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout_s:.0f}s; worker log:\n{worker.tail()}")


def _changes(settings: Settings, person_ids: set[str]) -> list[dict[str, Any]]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}",
                         "enable.partition.eof": True})  # fmt: skip
    topic = settings.topic("segments.changes")
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(settings.kafka_partitions)])
    found: list[dict[str, Any]] = []
    ends = 0
    deadline = time.monotonic() + 30
    try:
        while ends < settings.kafka_partitions and time.monotonic() < deadline:
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is not None:
                    ends += 1
                elif msg.value():
                    change = SEGMENT_CHANGE_CODEC.decode(msg.value())
                    if change["personId"] in person_ids:
                        found.append(change)
    finally:
        consumer.close()
    return found


def _cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=worker.env(),
        capture_output=True,
        text=True,
        timeout=400,
    )


class AnnKeepsBrowsing:
    """Posts events with Ann's cookie and email every 50 ms until stopped."""

    def __init__(self, url: str, run: str) -> None:
        self.url, self.run = url, run
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> AnnKeepsBrowsing:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            call = {"type": "track", "messageId": f"{self.run}-live-{self.sent}", "anonymousId": "web-ann",
                    "event": "Product Viewed", "context": {"traits": {"email": ANN_EMAIL}}}  # fmt: skip
            try:
                _post(self.url, "web", [call])
                self.sent += 1
            except (httpx.HTTPError, AssertionError):
                pass
            self._stop.wait(0.05)


def _erase_dan_through_the_api(
    settings: Settings, sql: warehouse.DriverSql, dan: str, worker: Worker
) -> None:
    """The API's erasure: bad input answered clearly and changing nothing, then Dan erased (202, 409 for a
    second request meanwhile, the status until done)."""
    token = "erasure-api-token-0001"
    app = create_persons_app(settings.model_copy(update={"api_tokens": SecretStr(token)}))
    dan_footprint = warehouse.collect(sql, [dan])
    with ThreadedServer(app, free_port()) as api, httpx.Client(base_url=api.url, timeout=30) as http:
        auth = {"Authorization": f"Bearer {token}"}
        assert http.post("/v1/persons/erase", json={"identifier": "dan@shop.com"}).status_code == 401
        bad = [
            ({"identifier": "dan@shop.com", "person_id": dan}, 400),
            ({}, 400),
            ({"identifier": "not an email", "kind": "email"}, 400),
            ({"identifier": "nobody@shop.com"}, 404),
            ({"identifier": "dan@shop.com", "colour": "red"}, 422),
        ]
        for body, expected in bad:
            answer = http.post("/v1/persons/erase", json=body, headers=auth)
            assert answer.status_code == expected, (body, answer.text)
            assert "\n" not in answer.json()["detail"]
        assert warehouse.verify(sql, settings.clickhouse_database, dan_footprint), "bad input changed nothing"
        started = http.post("/v1/persons/erase", json={"identifier": "dan@shop.com"}, headers=auth)
        assert started.status_code == 202, started.text
        again = http.post("/v1/persons/erase", json={"person_id": dan}, headers=auth)
        assert again.status_code == 409 and "in progress" in again.json()["detail"]
        status_url = started.json()["status_url"]
        deadline = time.monotonic() + 300
        state = http.get(status_url, headers=auth).json()
        while state["status"] in ("received", "in_progress") and time.monotonic() < deadline:
            time.sleep(1.0)
            state = http.get(status_url, headers=auth).json()
        assert state["status"] == "done", f"{state}\n{worker.tail()}"
        assert state["receipt"]["clickhouse_rows_deleted"]["identities"] >= 2
        assert http.get("/v1/privacy/requests/erasure-unknown", headers=auth).status_code == 404
    assert warehouse.verify(sql, settings.clickhouse_database, dan_footprint) == {}


def test_erasure_of_a_merged_person_while_her_events_keep_arriving(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        identity_group=f"identity-{suffix}",
        segments_group=f"segments-{suffix}",
        audiences_group=f"audiences-{suffix}",
        sources=SOURCES,
    )
    apply_definitions(settings, ROOT / "deploy" / "segments")
    destinations = tmp_path / "destinations"
    destinations.mkdir()
    (destinations / "ads.yaml").write_text(DESTINATION)
    worker = Worker(
        settings, tmp_path / "worker.log", extra_env={"OMNISEG_AUDIENCES_GROUP": settings.audiences_group}
    )
    client = clickhouse_client(settings, settings.clickhouse_database)
    sql = warehouse.DriverSql(client)
    run = f"er-{suffix}"
    try:
        worker.start()
        applied = _cli(worker, "destinations", "apply", str(destinations))
        assert applied.returncode == 0, applied.stderr
        with ThreadedServer(create_app(settings), free_port()) as collector:
            for channel, calls in _ann_history(run):
                _post(collector.url, channel, calls)

            def owner(key: str) -> str | None:
                rows = client.execute(
                    "SELECT argMax(person_id, version) FROM identities WHERE identifier = %(k)s "
                    "HAVING count() > 0",
                    {"k": key},
                )
                return str(rows[0][0]) if rows else None

            def ann_is_one_customer() -> bool:
                person = owner("loyalty_card:LCANN1")
                if person is None or owner(f"email:{ANN_EMAIL}") != person:
                    return False
                ids = tuple(warehouse.collect(sql, [person]).person_ids)
                entered = client.execute(
                    "SELECT count() FROM segment_changes WHERE segment_id = 'customers' "
                    "AND change = 'entered' AND person_id IN %(ids)s",
                    {"ids": ids},
                )[0][0]
                in_audience = client.execute(
                    "SELECT count() FROM audience_members WHERE hash = %(h)s AND added = 1", {"h": ANN_HASH}
                )[0][0]
                return bool(entered and in_audience) and owner("anonymous_id:web-ann") in ids

            try:
                _wait_for("Ann's history, merged, in ClickHouse", ann_is_one_customer, worker)
            except AssertionError as exc:
                seen = client.execute(
                    "SELECT identifier, person_id, version FROM identities ORDER BY version"
                )
                changes = client.execute("SELECT person_id, segment_id, change FROM segment_changes")
                raise AssertionError(f"{exc}\nidentities: {seen}\nsegment changes: {changes}") from None
            footprint = warehouse.collect(sql, [owner(f"email:{ANN_EMAIL}") or ""])
            assert len(footprint.person_ids) >= 2, "Ann is merged from several persons"
            assert {
                "email:ann@shop.com",
                "device_id:dev-ann",
                "loyalty_card:LCANN1",
            } <= footprint.identifiers
            dan = owner("email:dan@shop.com")
            assert dan is not None and dan not in footprint.person_ids

            dry = _cli(worker, "person", "erase", "ann@shop.com")
            assert dry.returncode == 0, dry.stderr
            assert "would erase 1 person" in dry.stdout and "events:" in dry.stdout
            assert "nothing changed" in dry.stdout
            assert warehouse.verify(sql, settings.clickhouse_database, footprint), "a dry run changes nothing"
            unknown = _cli(worker, "person", "erase", "nobody@shop.com", "--yes")
            assert unknown.returncode == 1 and unknown.stderr.startswith("error: no person has")
            assert len(unknown.stderr.strip().splitlines()) == 1

            with AnnKeepsBrowsing(collector.url, run) as load:
                time.sleep(1.0)
                erase = _cli(
                    worker, "person", "erase", " Ann@Shop.com ", "--yes", "--json", "--timeout", "300"
                )
                time.sleep(2.0)
            assert erase.returncode == 0, f"{erase.stderr}\n{worker.tail()}"
            answer = json.loads(erase.stdout)
            assert answer["status"] == "done"
            receipt = answer["receipt"]
            assert receipt["clickhouse_rows_deleted"]["events"] >= 4
            assert receipt["clickhouse_rows_deleted"]["identities"] >= 5
            assert ANN_EMAIL not in erase.stdout and "cust-ann" not in erase.stdout
            assert load.sent > 20, "events kept arriving during the erasure"

            # After the load: one more event carrying her email is accepted and dropped at intake.
            late = {"type": "track", "messageId": f"{run}-late", "userId": "new-login", "event": "Signed In",
                    "context": {"traits": {"email": ANN_EMAIL}}}  # fmt: skip
            _post(collector.url, "web", [late])
            health = httpx.get(f"{collector.url}/health", timeout=5).json()
            assert health["suppressed"] >= 1

        time.sleep(5.0)  # whatever was in flight is processed (the worker's checkpoints are 2 s)
        ids = footprint.person_ids | warehouse.collect(sql, footprint.person_ids).person_ids
        final = warehouse.Footprint(ids, footprint.identifiers, footprint.raw, footprint.hashes)
        assert warehouse.verify(sql, settings.clickhouse_database, final) == {}
        assert live_records_naming(settings, final.person_ids | final.identifiers) == {}
        assert owner("email:dan@shop.com") == dan, "Dan is untouched"
        assert (
            client.execute("SELECT count() FROM event_persons WHERE person_id = %(p)s", {"p": dan})[0][0] == 2
        )

        # The ad destination's next delta removes her; the removal stays for later pulls.
        assert client.execute(
            "SELECT added FROM audience_deltas WHERE hash = %(h)s ORDER BY kafka_offset", {"h": ANN_HASH}
        ) == [(0,)]
        exits = [c for c in _changes(settings, ids) if c["trigger"] == "erasure"]
        assert {c["segmentId"] for c in exits} >= {"customers"}
        assert all(c["change"] == "exited" for c in exits)
        assert all(not any(c["contacts"].values()) for c in exits), "an erasure exit carries no contacts"

        _erase_dan_through_the_api(settings, sql, dan, worker)
        listed = _cli(worker, "person", "requests")
        assert listed.returncode == 0 and f"{answer['request_id']}  erasure  done" in listed.stdout

        status = client.execute(
            "SELECT argMax(status, revision), argMax(receipt, revision) FROM privacy_requests "
            "WHERE request_id = %(r)s",
            {"r": answer["request_id"]},
        )[0]
        assert status[0] == "done"
        assert ANN_EMAIL not in status[1] and "web-ann" not in status[1]
    finally:
        worker.stop()
        client.disconnect()
