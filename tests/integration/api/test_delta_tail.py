"""The newest deltas from ``audiences.deltas`` itself, on the real Tansu broker and ClickHouse 18.16: a
committed delta is pullable before the sink writes it, an aborted one never is, the cursors carry on
when the sink catches up (the same answers from ClickHouse), and the API serves them once started."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import Producer
from fastapi.testclient import TestClient

from streams.api.delta_tail import DeltaTail
from streams.api.destinations import DestinationRegistry
from streams.api.persons import create_persons_app
from streams.dev.stack import clickhouse_client
from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.hashing import AudienceIdKind
from streams.settings import Settings
from streams.sinks.audiences import AudiencesSink
from streams.topics import AUDIENCE_DELTAS_TOPIC
from streams.warehouse.audience_cursors import CursorError
from streams.warehouse.audiences import Member, deltas, frontier, frontier_reader
from streams.wire.audiences import encode_delta
from tests.integration.sinks.test_dedup_by_message_id import wait_for
from tests.integration.warehouse.test_audience_queries import h

pytestmark = pytest.mark.integration

AT = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
EMAIL = AudienceIdKind.EMAIL
KEY = "tail-test-key"


class Writer:
    """Produces deltas in transactions, as the audience writer does."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic(AUDIENCE_DELTAS_TOPIC.name)
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka_bootstrap, "transactional.id": f"{self.topic}-test-writer"}
        )
        self.producer.init_transactions(30)

    def write(self, changes: list[tuple[str, bool]], commit: bool = True) -> None:
        self.producer.begin_transaction()
        for name, added in changes:
            self.producer.produce(self.topic, encode_delta(Delta("google", "vip", EMAIL, h(name), added), AT))
        if commit:
            self.producer.commit_transaction(30)
        else:
            self.producer.abort_transaction(30)


@pytest.fixture
def tail(settings_factory: Callable[..., Settings]) -> Iterator[tuple[Settings, DeltaTail]]:
    settings = settings_factory()
    reader = DeltaTail(
        settings, frontier_reader(partial(clickhouse_client, settings, settings.clickhouse_database))
    )
    reader.start()
    try:
        yield settings, reader
    finally:
        reader.close()


def test_a_committed_delta_is_pullable_before_the_sink_writes_it_and_cursors_carry_on_after(
    tail: tuple[Settings, DeltaTail],
) -> None:
    settings, reader = tail
    client = clickhouse_client(settings, settings.clickhouse_database)
    writer = Writer(settings)
    try:
        writer.write([("ann", True), ("bob", True)])
        writer.write([("cat", True)], commit=False)  # aborted: never a delta
        writer.write([("bob", False)])
        assert frontier(client) == 0  # no sink yet: ClickHouse has nothing
        # Once the tail read the third transaction: ann added; bob added and removed again (netted).
        ann = [Member("email", h("ann"))]
        wait_for(lambda: deltas(client, "google", "vip", 0, tail=reader).adds == ann, 30, "the tail")
        page = deltas(client, "google", "vip", 0, tail=reader)
        assert (page.adds, page.removes, page.more) == ([Member("email", h("ann"))], [], False)
        first_cursor = page.next_cursor
        assert first_cursor == reader.end >= 4  # three deltas and one aborted, and markers if any
        # A page limit splits the tail's rows, in offset order.
        split = deltas(client, "google", "vip", 0, limit=1, tail=reader)
        assert (split.adds, split.more, split.next_cursor) == ([Member("email", h("ann"))], True, 1)
        # Without the tail, ClickHouse alone: nothing yet.
        assert deltas(client, "google", "vip", 0).next_cursor == 0
        with pytest.raises(CursorError, match="ahead of the newest delta"):
            deltas(client, "google", "vip", first_cursor + 5, tail=reader)

        sink = AudiencesSink(settings)
        thread = threading.Thread(target=sink.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: frontier(client) >= first_cursor - 1, 60, "the sink to write the deltas")
            # The same answers now come from ClickHouse; the client's cursor carries on.
            again = deltas(client, "google", "vip", 0, tail=reader)
            assert (again.adds, again.removes) == (page.adds, page.removes)
            assert deltas(client, "google", "vip", 0).adds == page.adds
            writer.write([("dan", True)])
            # The tail's end can move past the previous commit marker before it reads the new record.
            dan = [Member("email", h("dan"))]
            wait_for(
                lambda: deltas(client, "google", "vip", first_cursor, tail=reader).adds == dan,
                30,
                "the tail to read the next transaction",
            )
            newer = deltas(client, "google", "vip", first_cursor, tail=reader)
            assert (newer.adds, newer.removes) == (dan, [])
        finally:
            sink.stop()
            thread.join(30)
    finally:
        client.disconnect()


def test_the_api_serves_the_tail_once_started(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    folder = tmp_path / "destinations"
    folder.mkdir()
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    (folder / "google.yaml").write_text(
        f"id: google\nkind: google_customer_match\napi_key_sha256: {digest}\n"
        "identifiers: [email]\naudiences:\n  - segment: vip\n"
    )
    settings = settings_factory(api_tokens="t", destinations_dir=folder)
    app = create_persons_app(settings, destinations=DestinationRegistry(folder))
    Writer(settings).write([("ann", True)])
    headers = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as http:  # runs the app's lifespan: the tail starts

        def pulled() -> bool:
            body = http.get(
                "/v1/destinations/google/audiences/vip/deltas", params={"cursor": "0"}, headers=headers
            )
            assert body.status_code == 200, body.text
            return bool(body.json()["add"])

        wait_for(pulled, 30, "the API to serve the committed delta")
        body = http.get(
            "/v1/destinations/google/audiences/vip/deltas", params={"cursor": "0"}, headers=headers
        ).json()
        assert body["add"] == [{"kind": "email", "hash": h("ann")}]
