"""The local stack and the migrations, against the real servers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from clickhouse_driver import Client
from confluent_kafka.admin import AdminClient

from streams.dev.process import free_port, pid_alive
from streams.dev.stack import LocalStack, apply_migrations, clickhouse_client
from streams.settings import Settings
from streams.topics import ALL_TOPICS
from streams.warehouse import migrations

pytestmark = pytest.mark.integration


def _cli(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OMNISEG_")}, **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_dev_up_status_down_round_trip(tmp_path: Path) -> None:
    ports = {
        "OMNISEG_DEV_STATE_DIR": str(tmp_path / "state"),
        "OMNISEG_DEV_KAFKA_PORT": str(free_port()),
        "OMNISEG_DEV_CLICKHOUSE_PORT": str(free_port()),
        "OMNISEG_DEV_CLICKHOUSE_HTTP_PORT": str(free_port()),
    }
    # A later shell that sets only the state folder: the env file `dev up` wrote there points every
    # command at this stack, ports included.
    later = {"OMNISEG_DEV_STATE_DIR": ports["OMNISEG_DEV_STATE_DIR"]}
    orphan = 0
    try:
        up = _cli(ports, "dev", "up")
        assert up.returncode == 0, up.stderr
        assert f"topics: {len(ALL_TOPICS)} ready ({len(ALL_TOPICS)} created)" in up.stdout
        status = _cli(later, "dev", "status")
        assert status.returncode == 0, status.stdout
        assert status.stdout.count("ready") == 2
        assert f"127.0.0.1:{ports['OMNISEG_DEV_KAFKA_PORT']}" in status.stdout
        migrated = _cli(later, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        clickhouse = f"127.0.0.1:{ports['OMNISEG_DEV_CLICKHOUSE_PORT']}/omniseg: 0 migrations applied"
        assert clickhouse in migrated.stdout, migrated.stdout
        # Idempotent: a second `up` finds both running and creates nothing new.
        again = _cli(ports, "dev", "up")
        assert again.returncode == 0, again.stderr
        assert "(0 created)" in again.stdout
        env = (tmp_path / "state" / "omniseg.env").read_text()
        assert f"OMNISEG_KAFKA_BOOTSTRAP=127.0.0.1:{ports['OMNISEG_DEV_KAFKA_PORT']}" in env
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{ports['OMNISEG_DEV_KAFKA_PORT']}"})
        topics = set(admin.list_topics(timeout=10).topics)
        assert {spec.name for spec in ALL_TOPICS} <= topics
        client = Client("127.0.0.1", port=int(ports["OMNISEG_DEV_CLICKHOUSE_PORT"]))
        assert client.execute("SELECT count() FROM omniseg.schema_migrations")[0][0] == len(
            migrations.discover()
        )
        # A worker started with the stack, and a collector a killed demo left behind: `dev down` stops them.
        worker = _cli(later, "dev", "up", "--worker")
        assert worker.returncode == 0 and "worker running (pid" in worker.stdout, (
            worker.stdout + worker.stderr
        )
        # Not our child (bash exits at once), like a collector whose demo was killed.
        spawn = ["bash", "-c", "setsid sleep 600 >/dev/null 2>&1 & echo $!"]
        orphan = int(subprocess.run(spawn, capture_output=True, text=True, timeout=10).stdout)
        (tmp_path / "state" / "demo-collector.pid").write_text(str(orphan))
        assert re.search(r"^worker\s+running", _cli(later, "dev", "status").stdout, re.M)
        # A database whose record says its first migration was another text: one line, no traceback
        # (last: the env file now names that database).
        client.execute("CREATE DATABASE tampered")
        client.execute(
            "CREATE TABLE tampered.schema_migrations (version UInt32, name String, checksum String, "
            "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
        )
        first = migrations.discover()[0]
        client.execute(
            "INSERT INTO tampered.schema_migrations (version, name, checksum) VALUES",
            [(first.version, first.name, "0" * 64)],
        )
        refused = _cli({**ports, "OMNISEG_CLICKHOUSE_DATABASE": "tampered"}, "dev", "up")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.startswith(f"error: {first.path.name} changed after it was applied to tampered")
        assert "Traceback" not in refused.stderr
    finally:
        down = _cli(ports, "dev", "down")
        if orphan and pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)
    assert down.returncode == 0
    assert "worker: stopped" in down.stdout and "demo-collector: stopped" in down.stdout, down.stdout
    assert not pid_alive(orphan)
    assert not list((tmp_path / "state").glob("*.pid"))
    assert _cli(ports, "dev", "status").returncode == 1


def test_dev_up_reports_a_taken_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        env = {
            "OMNISEG_DEV_STATE_DIR": str(tmp_path / "state"),
            "OMNISEG_ENV_FILE": str(tmp_path / "state" / "omniseg.env"),
            "OMNISEG_DEV_KAFKA_PORT": str(taken),
        }
        result = _cli(env, "dev", "up")
    assert result.returncode == 1
    assert f"port {taken} on 127.0.0.1 is already taken" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrations_apply_once_on_clickhouse_18(settings_factory) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_factory()
    client = clickhouse_client(settings, settings.clickhouse_database)
    assert client.execute("SELECT version() LIKE '18.%'")[0][0] == 1
    tables = {row[0] for row in client.execute("SHOW TABLES")}
    assert {"events", "events_dedup", "invalid_events", "schema_migrations"} <= tables
    assert apply_migrations(settings, report=lambda _m: None) == []


def test_migrations_apply_on_modern_clickhouse_chdb(tmp_path: Path) -> None:
    backend = migrations.ChdbBackend(str(tmp_path / "chdb"), "omniseg_test")
    try:
        done = migrations.apply(backend, "omniseg_test")
        assert [m.version for m in done] == [m.version for m in migrations.discover()]
        version = backend.rows("SELECT version()")[0][0]
        assert not str(version).startswith("18."), version
        tables = {
            row[0] for row in backend.rows("SELECT name FROM system.tables WHERE database = 'omniseg_test'")
        }
        assert {"events", "events_dedup", "invalid_events"} <= tables
        assert migrations.apply(backend, "omniseg_test") == []
    finally:
        backend.close()


def test_edited_migration_is_refused(settings_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings: Settings = settings_factory()
    copy = tmp_path / "mig"
    copy.mkdir()
    for item in migrations.discover():
        (copy / item.path.name).write_text(item.sql)
    (copy / "max_migration.txt").write_text(str(len(migrations.discover())))
    first = copy / migrations.discover()[0].path.name
    first.write_text(first.read_text() + "\n-- edited\n")
    backend = migrations.ClickHouseBackend(
        lambda db: clickhouse_client(settings, db), settings.clickhouse_database
    )
    with pytest.raises(migrations.MigrationError, match="changed after it was applied"):
        migrations.apply(backend, settings.clickhouse_database, migrations.discover(copy))


def test_stack_settings_point_at_ports() -> None:
    stack = LocalStack(Settings(dev_kafka_port=1234))
    assert stack.kafka_bootstrap == "127.0.0.1:1234"
