"""The fast importer against real brokers: what lands on the topics is what the importer before the fast
path wrote, and a broker that stops acknowledging fails the import with one line."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.bench.pos_rows import write_pos_csv
from streams.dev import servers
from streams.dev.process import free_port
from streams.dev.stack import create_topics
from streams.settings import Settings
from streams.sources.importer import Importer, ImportFailed, csv_rows, open_rows
from tests.integration.api.test_collector_api import consume_all
from tests.unit.sources import importer_reference as reference

pytestmark = pytest.mark.integration
RECEIVED = datetime(2026, 12, 4, 12, 0, 0, 250000, tzinfo=UTC)


def test_a_pos_export_lands_byte_for_byte_as_the_old_importer_wrote_it(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    path = tmp_path / "pos.csv"
    write_pos_csv(path, 20_000, bad_every=100)
    store, invalid = settings.channel_topic("store"), settings.topic("events.invalid")
    expected = reference.reference_records(
        reference.csv_rows(iter(io.StringIO(path.read_text(), newline=""))),
        "store",
        "pos.csv",
        store,
        invalid,
        RECEIVED,
    )
    importer = Importer(settings, "store", "pos.csv")
    importer.check_broker()
    rows, handle = open_rows(path, "csv")
    with handle:
        summary = importer.run(rows, received_at=RECEIVED)
    assert summary.rows == len(expected)
    assert summary.invalid == sum(topic == invalid for topic, _, _ in expected) > 0

    for topic in (store, invalid):
        wanted = [(key, value) for t, key, value in expected if t == topic]
        landed = consume_all(settings, topic, len(wanted))
        assert sorted(landed) == sorted(wanted), topic
        # One key, one partition: its records keep the file's order.
        by_key_landed: dict[bytes | None, list[bytes]] = defaultdict(list)
        by_key_wanted: dict[bytes | None, list[bytes]] = defaultdict(list)
        for key, value in landed:
            by_key_landed[key].append(value)
        for key, value in wanted:
            by_key_wanted[key].append(value)
        assert by_key_landed == by_key_wanted, topic


def test_a_broker_that_stops_acknowledging_fails_the_import_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    broker = servers.tansu(tmp_path / "broker", port)
    broker.start(timeout_s=60)
    try:
        settings = Settings(kafka_bootstrap=f"127.0.0.1:{port}", kafka_session_timeout_ms=6000)
        create_topics(settings)
        path = tmp_path / "pos.csv"
        write_pos_csv(path, 5_000)
        importer = Importer(settings, "store", "pos.csv", delivery_timeout_s=3)
        importer.check_broker()
    finally:
        broker.stop()
    rows = csv_rows(iter(io.StringIO(path.read_text(), newline="")))
    with pytest.raises(ImportFailed) as failed:
        importer.run(rows)
    message = str(failed.value)
    assert "\n" not in message
    assert "the import is incomplete, run it again" in message
