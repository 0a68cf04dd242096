"""Session fixtures: a real Tansu broker and a real ClickHouse server, started here and stopped by pid.

Every test that needs them gets its own topic prefix and its own ClickHouse database, so tests never see
each other's data.
"""

from __future__ import annotations

import os

# Tests must never pick up a developer's .omniseg/omniseg.env: set before streams.settings is imported.
os.environ.setdefault("OMNISEG_ENV_FILE", "/nonexistent/omniseg.env")

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.dev import servers
from streams.dev.process import ManagedProcess, free_port
from streams.dev.stack import apply_migrations, create_topics
from streams.settings import Settings


@dataclass
class TestStack:
    kafka_bootstrap: str
    clickhouse_host: str
    clickhouse_port: int
    kafka_proc: ManagedProcess
    clickhouse_proc: ManagedProcess

    def stop_clickhouse(self) -> None:
        self.clickhouse_proc.stop()

    def start_clickhouse(self) -> None:
        self.clickhouse_proc.start(timeout_s=60)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": self.kafka_bootstrap,
            "clickhouse_host": self.clickhouse_host,
            "clickhouse_port": self.clickhouse_port,
        }
        values.update(overrides)
        return Settings(**values)


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    state = Path(tempfile.mkdtemp(prefix="omniseg-test-stack-"))
    kafka_port, ch_port, ch_http = free_port(), free_port(), free_port()
    kafka = servers.tansu(state, kafka_port)
    clickhouse = servers.clickhouse(state, ch_port, ch_http)
    try:
        kafka.start(timeout_s=60)
        clickhouse.start(timeout_s=60)
        yield TestStack(f"127.0.0.1:{kafka_port}", "127.0.0.1", ch_port, kafka, clickhouse)
    finally:
        clickhouse.stop()
        kafka.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def settings_factory(stack: TestStack) -> Callable[..., Settings]:
    """Settings on the test stack with a fresh topic prefix and database, topics created, migrated."""

    def make(**overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:10]
        values: dict[str, Any] = {
            "topic_prefix": f"t{suffix}.",
            "clickhouse_database": f"test_{suffix}",
            "sink_group": f"sink-{suffix}",
        }
        values.update(overrides)
        settings = stack.settings(**values)
        create_topics(settings)
        apply_migrations(settings, report=lambda _msg: None)
        return settings

    return make
