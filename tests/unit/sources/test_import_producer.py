"""The importer's producer: safe by default (idempotent, acks=all), fast (big batches, no callback per
record), and an import that the broker never acknowledges fails with one line."""

from __future__ import annotations

import io

import pytest

from streams.kafka.config import bulk_producer_config, producer_config
from streams.settings import Settings
from streams.sources.importer import Importer, ImportFailed, csv_rows


def test_bulk_config_keeps_the_safe_defaults_and_reports_failures_only() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    config = bulk_producer_config(settings, "omniseg-import")
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["delivery.report.only.error"] is True
    assert config["partitioner"] == producer_config(settings, "x")["partitioner"]
    assert config["linger.ms"] >= 100 and config["batch.size"] >= 1_000_000
    assert bulk_producer_config(settings, "x", **{"message.timeout.ms": 3000})["message.timeout.ms"] == 3000


def test_records_never_acknowledged_fail_the_import_with_one_line() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1")  # nothing listens there
    importer = Importer(settings, "store", "pos.csv", delivery_timeout_s=1)
    rows = csv_rows(iter(io.StringIO("transactionId,loyaltyCard,ean\nT1,6337 1,501\nT2,6337 2,502\n")))
    with pytest.raises(ImportFailed) as failed:
        importer.run(rows)
    message = str(failed.value)
    assert "\n" not in message
    assert "did not acknowledge 2 records (first error: Local: Message timed out)" in message
