"""``omniseg dev``: the local embedded stack (Tansu + ClickHouse 18.16), topics and migrations."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clickhouse_driver import Client
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.dev import servers
from streams.dev.process import ManagedProcess, StackError
from streams.settings import CHANNELS, Settings
from streams.topics import ALL_TOPICS
from streams.warehouse import migrations

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
        """Point every omniseg command at this stack; keeps existing dev write keys across restarts."""
        keys = self._existing_write_keys() or {
            f"dev-{channel}-{secrets.token_hex(8)}": channel for channel in CHANNELS
        }
        sources = ",".join(
            f'"{key}":{{"name":"dev-{channel}","channel":"{channel}"}}' for key, channel in keys.items()
        )
        lines = [
            "# Written by `omniseg dev up`: settings for the local stack. Environment variables win.",
            f"OMNISEG_KAFKA_BOOTSTRAP={self.kafka_bootstrap}",
            "OMNISEG_CLICKHOUSE_HOST=127.0.0.1",
            f"OMNISEG_CLICKHOUSE_PORT={self.clickhouse_port}",
            f"OMNISEG_CLICKHOUSE_DATABASE={self.settings.clickhouse_database}",
            f"OMNISEG_SOURCES={{{sources}}}",
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
        import json

        if not self.env_file.exists():
            return {}
        for line in self.env_file.read_text().splitlines():
            if line.startswith("OMNISEG_SOURCES="):
                try:
                    raw = json.loads(line.split("=", 1)[1])
                    return {key: value["channel"] for key, value in raw.items()}
                except (ValueError, KeyError, TypeError):
                    return {}
        return {}


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
    return migrations.apply(backend, settings.clickhouse_database, progress=report)


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
