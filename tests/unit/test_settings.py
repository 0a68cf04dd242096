"""Settings: one frozen object; production files use only names that exist."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import ValidationError

from streams.dev.process import StackError
from streams.dev.stack import LocalStack, env_line
from streams.settings import Settings, env_file_path

ROOT = Path(__file__).resolve().parents[2]


def _names_in(path: Path) -> set[str]:
    return set(re.findall(r"\bOMNISEG_([A-Z0-9_]+)\b", path.read_text()))


@pytest.mark.parametrize(
    "path", ["docker-compose.yml", "deploy/production.env.example", "deploy/omniseg.env"]
)
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


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any OMNISEG_ variable, plus ``extra``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OMNISEG_")}
    return {**env, **extra}


_DUMP = "from streams.settings import Settings; print(Settings().model_dump_json())"


def _settings_json(env: dict[str, str], shell_prefix: str = "") -> dict[str, object]:
    """``Settings()`` of a fresh interpreter, started by bash after ``shell_prefix``."""
    script = f"{shell_prefix} exec {shlex.quote(sys.executable)} -c {shlex.quote(_DUMP)}"
    done = subprocess.run(
        ["bash", "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_sourcing_the_dev_env_file_in_bash_gives_the_settings_the_file_gives(tmp_path: Path) -> None:
    stack = LocalStack(Settings(clickhouse_database="shop_db", dev_kafka_port=29092), state_dir=tmp_path)
    stack.write_env_file()
    from_file = _settings_json(_clean_env(OMNISEG_ENV_FILE=str(stack.env_file)))
    sourced = _settings_json(
        _clean_env(OMNISEG_ENV_FILE=str(tmp_path / "absent.env")),
        f"set -a; . {shlex.quote(str(stack.env_file))}; set +a;",
    )
    assert sourced == from_file
    assert len(from_file["sources"]) == 4  # type: ignore[arg-type]
    assert from_file["kafka_bootstrap"] == "127.0.0.1:29092"
    assert from_file["clickhouse_database"] == "shop_db"


@pytest.mark.parametrize("value", ["plain", 'with "json" {a:[1, 2]} # and $HOME, ~ & | ; < > *', ""])
def test_env_line_reads_the_same_in_bash_and_dotenv(tmp_path: Path, value: str) -> None:
    path = tmp_path / "x.env"
    path.write_text(env_line("OMNISEG_X", value) + "\n")
    assert dotenv_values(path)["OMNISEG_X"] == value
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . {shlex.quote(str(path))}; set +a; printf %s "$OMNISEG_X"'],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shell.stdout == value


@pytest.mark.parametrize("value", ["it's", "back\\slash", "${HOME}", "two\nlines"])
def test_env_line_refuses_values_a_shell_and_dotenv_read_differently(value: str) -> None:
    with pytest.raises(StackError, match="cannot write OMNISEG_X to the env file"):
        env_line("OMNISEG_X", value)


def test_env_file_follows_the_dev_state_dir() -> None:
    assert env_file_path({}) == Path(".omniseg/omniseg.env")
    assert env_file_path({"OMNISEG_DEV_STATE_DIR": "/srv/dev"}) == Path("/srv/dev/omniseg.env")
    both = {"OMNISEG_DEV_STATE_DIR": "/srv/dev", "OMNISEG_ENV_FILE": "/etc/omniseg.env"}
    assert env_file_path(both) == Path("/etc/omniseg.env")


def test_commands_read_the_env_file_of_a_custom_state_dir(tmp_path: Path) -> None:
    (tmp_path / "omniseg.env").write_text("OMNISEG_CLICKHOUSE_PORT=23456\n")
    settings = _settings_json(_clean_env(OMNISEG_DEV_STATE_DIR=str(tmp_path)))
    assert settings["clickhouse_port"] == 23456
    assert settings["dev_state_dir"] == str(tmp_path)


def test_a_stall_limit_within_two_checkpoints_is_refused_in_one_line() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(segments_state_flush_s=30.0, stage_stall_s=60.0)
    assert "must be more than twice segments_state_flush_s" in str(raised.value)
    assert Settings(segments_state_flush_s=30.0, stage_stall_s=61.0).stage_stall_s == 61.0
