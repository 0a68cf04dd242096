"""``omniseg import`` against the real broker: good rows land, bad rows go to events.invalid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.domain.events import Event
from streams.settings import Settings
from streams.wire.codecs import EVENT_CODEC, INVALID_CODEC
from tests.integration.api.test_collector_api import consume_all

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples"


def _import(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "import", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pos_csv_groups_basket_lines_and_reports_bad_rows(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    result = _import(settings, "--channel", "store", str(EXAMPLES / "pos_export.csv"))
    assert result.returncode == 0, result.stderr
    assert "rows read: 5; events produced: 3; invalid: 2" in result.stdout
    events = [
        Event.from_avro(EVENT_CODEC.decode(value))
        for _, value in consume_all(settings, settings.channel_topic("store"), 3)
    ]
    assert len(events) == 3
    basket = next(e for e in events if e.store and e.store.transactionId == "LDN-01-0001")
    assert [line.ean for line in basket.lines] == ["5012345678900", "5098765432106"]
    assert basket.lines[1].quantity == 2
    assert basket.identifiers.loyaltyCard == "6337 0001 0001"
    assert {e.event for e in events} == {"Order Completed", "Product Returned"}
    invalid = [INVALID_CODEC.decode(v) for _, v in consume_all(settings, settings.topic("events.invalid"), 2)]
    by_line = {record["position"]: record for record in invalid}
    assert set(by_line) == {"line 4", "line 6"}
    assert "no identifier" in by_line["line 4"]["reason"]
    assert by_line["line 6"]["field"] == "timestamp"
    assert all(record["stage"] == "import" and record["source"] == "pos_export.csv" for record in invalid)
    assert b"not-a-time" in by_line["line 6"]["original"]


def test_esp_jsonl_and_reimport_gives_the_same_message_ids(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory()
    path = str(EXAMPLES / "esp_export.jsonl")
    first = _import(settings, "--channel", "email", "--source", "esp", path)
    assert first.returncode == 0, first.stderr
    assert "rows read: 7; events produced: 4; invalid: 3" in first.stdout
    second = _import(settings, "--channel", "email", "--source", "esp", path)
    assert second.returncode == 0, second.stderr
    events = [
        Event.from_avro(EVENT_CODEC.decode(value))
        for _, value in consume_all(settings, settings.channel_topic("email"), 8)
    ]
    assert len(events) == 8
    ids = [event.messageId for event in events]
    assert len(set(ids)) == 4, "a re-import must reuse the derived messageIds"
    assert all(event.context.source == "esp" for event in events)
    invalid = [INVALID_CODEC.decode(v) for _, v in consume_all(settings, settings.topic("events.invalid"), 6)]
    reasons = {record["position"]: record["reason"] for record in invalid}
    assert "not valid JSON" in reasons["line 6"]
    assert "properties" in reasons["line 7"]
    assert "no identifier" in reasons["line 5"]


def test_missing_file_and_unknown_format_are_clear_errors(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    missing = _import(settings, "--channel", "web", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    unknown = _import(settings, "--channel", "web", str(odd))
    assert unknown.returncode == 1 and "--format csv|jsonl" in unknown.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr


def test_unreachable_broker_fails_fast_with_a_message(tmp_path: Path) -> None:
    data = tmp_path / "e.jsonl"
    data.write_text(json.dumps({"event": "X", "userId": "u"}) + "\n")
    settings = Settings(kafka_bootstrap="127.0.0.1:1")
    result = _import(settings, "--channel", "web", str(data))
    assert result.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.stderr


def test_a_consent_export_becomes_identify_calls_and_a_value_not_true_or_false_is_a_bad_row(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    result = _import(settings, "--channel", "email", "--source", "cmp", str(EXAMPLES / "consent_export.csv"))
    assert result.returncode == 0, result.stderr
    assert "rows read: 4; events produced: 3; invalid: 1" in result.stdout
    events = [
        Event.from_avro(EVENT_CODEC.decode(value))
        for _, value in consume_all(settings, settings.channel_topic("email"), 3)
    ]
    by_email = {event.identifiers.email: event for event in events}
    assert by_email["bo.chen@example.com"].type == "identify"
    assert (by_email["bo.chen@example.com"].traits or {})["consent"] == {
        "advertising": False,
        "email": True,
        "ad_user_data": False,
        "ad_personalization": False,
    }
    (invalid,) = [
        INVALID_CODEC.decode(v) for _, v in consume_all(settings, settings.topic("events.invalid"), 1)
    ]
    assert invalid["position"] == "line 5"
    assert "traits.consent.advertising: expected true or false" in invalid["reason"]
