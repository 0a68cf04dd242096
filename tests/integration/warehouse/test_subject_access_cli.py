"""``omniseg person export`` as an operator runs it, against ClickHouse 18.16: the JSON document on
stdout, or in a file with progress on stderr; one line and exit 1 for an unknown person, 2 for an
unusable identifier, 3 with no file left behind when ClickHouse is down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.dev.process import free_port, release_port
from streams.dev.stack import clickhouse_client
from streams.domain.subject_access import FORMAT
from streams.settings import Settings
from tests.integration.warehouse.test_subject_access_warehouse import ANN_KEYS, C, _load

pytestmark = pytest.mark.integration


def _cli(settings: Settings, *args: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(port or settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "person", "export", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    done.stderr = "".join(
        line for line in done.stderr.splitlines(keepends=True) if not line.startswith("omniseg: running pure")
    )
    return done


def test_person_export_to_stdout_and_to_a_file(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    db = clickhouse_client(settings, settings.clickhouse_database)
    try:
        _load(db.execute)
    finally:
        db.disconnect()

    shown = _cli(settings, "cust-42", "--kind", "customer_id")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    doc = json.loads(shown.stdout)
    assert doc["format"] == FORMAT and doc["person_id"] == C
    assert {row["identifier"] for row in doc["identifiers"]["rows"]} == ANN_KEYS

    target = tmp_path / "ann.json"
    written = _cli(settings, "web-a1", "--kind", "anonymous_id", "--output", str(target))
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert f"wrote {target}" in written.stderr and "events 5" in written.stderr
    from_file = json.loads(target.read_text())
    assert from_file["person_id"] == C
    assert from_file["events"] == doc["events"] and from_file["audiences"] == doc["audiences"]
    assert not (tmp_path / "ann.json.part").exists()


def test_person_export_errors_are_one_line(settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    settings = settings_factory()
    unknown = _cli(settings, "nobody@shop.com")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.startswith("no person has identifier email:nobody@shop.com")
    assert unknown.stderr.count("\n") == 1
    unusable = _cli(settings, "null", "--kind", "email")
    assert unusable.returncode == 2 and unusable.stderr.count("\n") == 1, unusable.stderr
    assert "not a usable identifier" in unusable.stderr

    closed = free_port()
    target = tmp_path / "out.json"
    try:
        down = _cli(settings, "ann@shop.com", "--output", str(target), port=closed)
    finally:
        release_port(closed)
    assert down.returncode == 3 and down.stderr.count("\n") == 1, down.stderr
    assert "cannot reach ClickHouse" in down.stderr
    assert not target.exists() and not (tmp_path / "out.json.part").exists()
