"""``omniseg destinations`` and ``omniseg audiences`` as an operator runs them, against ClickHouse 18.16."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.dev.process import free_port
from streams.dev.stack import clickhouse_client
from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.hashing import AudienceIdKind
from streams.settings import Settings
from tests.integration.warehouse.test_audience_queries import h, insert

pytestmark = pytest.mark.integration

EMAIL, PHONE, EXTERNAL = AudienceIdKind.EMAIL, AudienceIdKind.PHONE, AudienceIdKind.EXTERNAL_ID
GOOGLE = (
    "id: google\nkind: google_customer_match\napi_key_sha256: " + h("key") + "\n"
    "identifiers: [email, phone, external_id]\naudiences:\n  - segment: vip\n  - segment: lapsed\n"
)


def _cli(settings: Settings, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "OMNISEG_DESTINATIONS_DIR": str(folder),
    }
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def loaded(settings_factory: Callable[..., Settings], tmp_path: Path) -> tuple[Settings, Path]:
    settings = settings_factory()
    folder = tmp_path / "destinations"
    folder.mkdir()
    (folder / "google.yaml").write_text(GOOGLE)
    client = clickhouse_client(settings, settings.clickhouse_database)
    log = [(n, Delta("google", "vip", EMAIL, h(f"p{n}"), True)) for n in range(30)]
    log += [
        (30, Delta("google", "vip", PHONE, h("p0"), True)),
        (31, Delta("google", "vip", EXTERNAL, h("C"), True)),
    ]
    insert(client, log)
    client.disconnect()
    return settings, folder


def test_destinations_key_and_check(loaded: tuple[Settings, Path], tmp_path: Path) -> None:
    settings, folder = loaded
    made = _cli(settings, folder, "destinations", "key")
    assert made.returncode == 0, made.stderr
    key, digest = (line.split(":", 1)[1].strip() for line in made.stdout.splitlines())
    assert len(key) >= 43 and digest == hashlib.sha256(key.encode()).hexdigest()

    ok = _cli(settings, folder, "destinations", "check")
    assert ok.returncode == 0 and ok.stdout == "ok       google (google_customer_match): 2 audiences\n"
    shipped = _cli(
        settings, folder, "destinations", "check", str(Path(__file__).parents[3] / "deploy" / "destinations")
    )
    assert (
        shipped.returncode == 0 and "ok       google-ads" in shipped.stdout and "meta-ads" in shipped.stdout
    )

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.yaml").write_text("id: Bad Id\nkind: nope\napi_key_sha256: secret\naudiences: []\n")
    bad = _cli(settings, folder, "destinations", "check", str(broken))
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    assert len(lines) == 4 and all(
        line.startswith(f"{broken / 'a.yaml'}: destination 'Bad Id': ") for line in lines
    )
    missing = _cli(settings, folder, "destinations", "check", str(tmp_path / "none"))
    assert missing.returncode == 2 and missing.stderr.strip().endswith("not a directory of destination files")


def test_audiences_list_show_and_export(loaded: tuple[Settings, Path], tmp_path: Path) -> None:
    settings, folder = loaded
    listed = _cli(settings, folder, "audiences", "list", "google")
    assert listed.returncode == 0, listed.stderr
    assert [line.split() for line in listed.stdout.splitlines()] == [["lapsed", "0"], ["vip", "32"]]
    assert "2 audiences of google at cursor 32" in listed.stderr

    shown = _cli(settings, folder, "audiences", "show", "google", "vip", "--limit", "5")
    assert shown.returncode == 0, shown.stderr
    assert (
        len(shown.stdout.splitlines()) == 5 and "5 of 32 members of google/vip at cursor 32" in shown.stderr
    )
    bad_id = _cli(settings, folder, "audiences", "show", "google", "Not An Id")
    assert bad_id.returncode == 2 and len(bad_id.stderr.splitlines()) == 1

    out = tmp_path / "vip.csv"
    exported = _cli(
        settings, folder, "audiences", "export", "google", "vip", "--format", "google", "-o", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["Email", "Phone"] and len(rows) == 1 + 31 and ["", h("p0")] in rows
    assert "export: 31 rows of google/vip at cursor 32 to" in exported.stderr
    assert not list(tmp_path.glob(".*partial"))
    stdout = _cli(settings, folder, "audiences", "export", "google", "vip", "--format", "google")
    assert stdout.stdout.replace("\r\n", "\n") == out.read_text().replace("\r\n", "\n")
    nowhere = tmp_path / "missing" / "vip.csv"
    unwritable = _cli(
        settings, folder, "audiences", "export", "google", "vip", "--format", "google", "-o", str(nowhere)
    )
    assert (
        unwritable.returncode == 1
        and unwritable.stderr == f"Error: cannot write {nowhere}: No such file or directory\n"
    )
    wrong = _cli(settings, folder, "audiences", "export", "google", "vip", "--format", "meta")
    assert wrong.returncode == 2
    assert (
        wrong.stderr
        == "error: the destination's hashes follow google_customer_match rules; export it as format google\n"
    )

    client = clickhouse_client(settings, settings.clickhouse_database)
    pulls = client.execute("SELECT operation, rows, client FROM audience_pulls ORDER BY at, operation, rows")
    client.disconnect()
    assert sorted((op, rows) for op, rows, _ in pulls) == [
        ("export", 31),
        ("export", 31),
        ("list", 2),
        ("snapshot", 5),
    ]
    assert all(who.startswith("cli") for _, _, who in pulls)


def test_clickhouse_down_is_one_line(loaded: tuple[Settings, Path]) -> None:
    settings, folder = loaded
    down = settings.model_copy(update={"clickhouse_port": free_port()})
    result = _cli(down, folder, "audiences", "list", "google")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot reach ClickHouse" in result.stderr
