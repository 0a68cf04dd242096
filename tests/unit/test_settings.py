"""Settings: one frozen object; production files use only names that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _names_in(path: Path) -> set[str]:
    return set(re.findall(r"\bOMNISEG_([A-Z0-9_]+)\b", path.read_text()))


@pytest.mark.parametrize("path", ["docker-compose.yml", "deploy/production.env.example"])
def test_production_files_use_only_real_setting_names(path: str) -> None:
    known = {name.upper() for name in Settings.model_fields} | {"ENV_FILE"}
    unknown = _names_in(ROOT / path) - known
    assert not unknown, f"{path} sets OMNISEG_ names that no setting reads: {sorted(unknown)}"


def test_settings_are_frozen_and_secret_is_masked() -> None:
    settings = Settings(clickhouse_password="s3cret")
    with pytest.raises(ValidationError):
        settings.clickhouse_port = 1  # type: ignore[misc]
    assert "s3cret" not in repr(settings)


def test_sources_parse_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISEG_SOURCES", '{"key-for-web-1":{"name":"shop","channel":"web"}}')
    settings = Settings()
    assert settings.sources["key-for-web-1"].channel == "web"


def test_short_write_key_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="shorter than 8 characters"):
        Settings(sources={"abc": {"name": "x", "channel": "web"}})


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(ValidationError, match="channel"):
        Settings(sources={"long-enough-key": {"name": "x", "channel": "fax"}})


def test_topic_prefix_applies_to_channel_topics() -> None:
    assert Settings(topic_prefix="acme.").channel_topic("store") == "acme.events.store"
