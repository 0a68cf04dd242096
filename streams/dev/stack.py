"""``omniseg dev``: the local embedded stack (Tansu + ClickHouse 18.16), topics and migrations."""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clickhouse_driver import Client
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from dotenv import dotenv_values

from streams.dev import servers
from streams.dev.process import ManagedProcess, StackError
from streams.settings import CHANNELS, Settings
from streams.topics import ALL_TOPICS
from streams.warehouse import migrations
from streams.warehouse.cluster import cluster_spec

Report = Callable[[str], None]


@dataclass
class StackStatus:
    name: str
    pid: int | None
    ready: bool
    address: str
    log: Path


class LocalStack:
    """The two local servers, their state folder and what runs on them."""

    def __init__(self, settings: Settings, state_dir: Path | None = None) -> None:
        self.settings = settings
        self.state_dir = (state_dir or settings.dev_state_dir).resolve()
        self.kafka_port = settings.dev_kafka_port
        self.clickhouse_port = settings.dev_clickhouse_port
        self.clickhouse_http_port = settings.dev_clickhouse_http_port

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "omniseg.env"

    def kafka(self) -> ManagedProcess:
        return servers.tansu(self.state_dir, self.kafka_port)

    def clickhouse(self) -> ManagedProcess:
        return servers.clickhouse(self.state_dir, self.clickhouse_port, self.clickhouse_http_port)

    def worker(self) -> ManagedProcess:
        """An ``omniseg worker`` on this stack (settings from its env file), kept like the servers: its
        pid and log are in the state folder, ``dev status`` shows it and ``dev down`` stops it."""
        return ManagedProcess(
            name="worker",
            argv=[sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"],
            state_dir=self.state_dir,
            ports=[],
            is_ready=lambda: True,
            env={**os.environ, "OMNISEG_ENV_FILE": str(self.env_file)},
        )

    def start_worker(self, report: Report = print) -> int:
        """Start the worker unless it runs (idempotent); returns its pid."""
        pid = self.worker().start(self.settings.dev_ready_timeout_s)
        report(f"worker running (pid {pid}, log {self.worker().log_file})")
        return pid

    def up(self, report: Report = print) -> None:
        """Start both servers (idempotent), create every topic, apply every migration, write the env file."""
        timeout = self.settings.dev_ready_timeout_s
        pid = self.kafka().start(timeout)
        report(f"kafka (tansu) ready on {self.kafka_bootstrap} (pid {pid})")
        pid = self.clickhouse().start(timeout)
        report(f"clickhouse ready on 127.0.0.1:{self.clickhouse_port} (pid {pid})")
        settings = self.write_env_file()
        created = create_topics(settings)
        report(f"topics: {len(ALL_TOPICS)} ready ({created} created)")
        applied = apply_migrations(settings, report)
        report(f"migrations: {len(applied)} applied to {settings.clickhouse_database}")
        report(f"settings written to {self.env_file}")

    def down(self, report: Report = print) -> None:
        # The worker (and a collector a stopped demo left) first: they would otherwise retry against
        # servers that are gone.
        collector = ManagedProcess("demo-collector", [], self.state_dir, [], lambda: False)
        for proc in (self.worker(), collector):
            if proc.pid() is not None:
                proc.stop()
                report(f"{proc.name}: stopped")
        for proc in (self.kafka(), self.clickhouse()):
            was = proc.stop()
            report(f"{proc.name}: {'stopped' if was else 'not running'}")

    def status(self) -> list[StackStatus]:
        result = []
        for proc, address in (
            (self.kafka(), self.kafka_bootstrap),
            (self.clickhouse(), f"127.0.0.1:{self.clickhouse_port}"),
        ):
            pid = proc.pid()
            result.append(
                StackStatus(proc.name, pid, pid is not None and proc.is_ready(), address, proc.log_file)
            )
        return result

    def write_env_file(self) -> Settings:
        """Point every omniseg command at this stack; keeps existing dev write keys across restarts.

        The file reads the same with pydantic-settings as with ``set -a; . FILE; set +a`` in a shell.
        """
        keys = self._existing_write_keys() or {
            f"dev-{channel}-{secrets.token_hex(8)}": channel for channel in CHANNELS
        }
        sources = json.dumps(
            {key: {"name": f"dev-{channel}", "channel": channel} for key, channel in keys.items()},
            separators=(",", ":"),
        )
        values = {
            "OMNISEG_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OMNISEG_CLICKHOUSE_HOST": "127.0.0.1",
            "OMNISEG_CLICKHOUSE_PORT": str(self.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": self.settings.clickhouse_database,
            "OMNISEG_SOURCES": sources,
            # `dev status` and `dev down` in a later shell find this stack's ports here.
            "OMNISEG_DEV_KAFKA_PORT": str(self.kafka_port),
            "OMNISEG_DEV_CLICKHOUSE_PORT": str(self.clickhouse_port),
            "OMNISEG_DEV_CLICKHOUSE_HTTP_PORT": str(self.clickhouse_http_port),
        }
        lines = [
            "# Written by `omniseg dev up`: settings for the local stack. Environment variables win.",
            "# Every omniseg command reads this file; a shell can load it with: set -a; . FILE; set +a",
            *(env_line(name, value) for name, value in values.items()),
        ]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env_file.write_text("\n".join(lines) + "\n")
        return self.settings.model_copy(
            update={
                "kafka_bootstrap": self.kafka_bootstrap,
                "clickhouse_host": "127.0.0.1",
                "clickhouse_port": self.clickhouse_port,
                "sources": Settings.model_validate(
                    {"sources": {k: {"name": f"dev-{c}", "channel": c} for k, c in keys.items()}}
                ).sources,
            }
        )

    def _existing_write_keys(self) -> dict[str, str]:
        if not self.env_file.exists():
            return {}
        raw = dotenv_values(self.env_file).get("OMNISEG_SOURCES")
        try:
            return {key: value["channel"] for key, value in json.loads(raw or "{}").items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return {}


# Written bare: nothing in these needs quoting in a shell or in a dotenv file.
_BARE = re.compile(r"[A-Za-z0-9_.:/@%+,-]*")


def env_line(name: str, value: str) -> str:
    """``NAME=value`` that a POSIX shell (``. FILE``) and pydantic's dotenv reader read as ``value``.

    Inside single quotes a shell takes every character literally; the dotenv reader does too except for
    ``\\``, ``\'`` and ``${…}``, so values with a backslash, a single quote, ``${`` or a line break have
    no spelling both read alike and are refused.
    """
    if _BARE.fullmatch(value):
        return f"{name}={value}"
    if any(bad in value for bad in ("'", "\\", "${", "\n", "\r")):
        raise StackError(
            f"cannot write {name} to the env file: its value contains a quote, a backslash, '${{' or a "
            "line break, which a shell and the settings reader would read differently"
        )
    return f"{name}='{value}'"


def clickhouse_client(settings: Settings, database: str | None = None) -> Client:
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=database or "default",
        connect_timeout=5,
        send_receive_timeout=60,
        settings={"max_block_size": 100_000},
    )


def apply_migrations(settings: Settings, report: Report = print) -> list[migrations.Migration]:
    backend = migrations.ClickHouseBackend(
        lambda db: clickhouse_client(settings, db), settings.clickhouse_database
    )
    return migrations.apply(
        backend, settings.clickhouse_database, progress=report, cluster=cluster_spec(settings)
    )


def create_topics(settings: Settings, timeout_s: float = 30.0) -> int:
    """Create every topic in ``streams.topics`` that is missing; returns how many were created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise StackError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    wanted = []
    for spec in ALL_TOPICS:
        name = settings.topic(spec.name)
        if name in existing:
            continue
        config = {"cleanup.policy": "compact"} if spec.compacted else {}
        wanted.append(
            NewTopic(
                name,
                num_partitions=spec.partitions or settings.kafka_partitions,
                replication_factor=settings.kafka_replication,
                config=config,
            )
        )
    if not wanted:
        return 0
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise StackError(f"cannot create topic {name}: {exc}") from exc
    return len(wanted)
