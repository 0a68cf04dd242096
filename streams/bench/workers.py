"""``omniseg worker`` processes for the benchmarks: started with their own env file and roles, stopped
by process group, and their consumer groups' committed offsets read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streams.settings import Settings

# One client per consumer group for reading its committed offsets, kept for the whole run: the bench
# polls them every 50 ms while it waits, and a new client per read (threads, a connection, metadata,
# the coordinator) cost the bench and the broker CPU beside the processes being measured.
_OFFSET_CLIENTS: dict[tuple[str, str], Consumer] = {}


def committed_offsets(settings: Settings, group: str, topics: list[str]) -> int:
    client = _OFFSET_CLIENTS.get((settings.kafka_bootstrap, group))
    if client is None:
        client = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
        _OFFSET_CLIENTS[(settings.kafka_bootstrap, group)] = client
    wanted = [TopicPartition(t, p) for t in topics for p in range(settings.kafka_partitions)]
    return sum(max(0, tp.offset) for tp in client.committed(wanted, timeout=10))


def close_offset_clients() -> None:
    while _OFFSET_CLIENTS:
        _OFFSET_CLIENTS.popitem()[1].close()


def start_worker(settings: Settings, env_file: Path, overrides: dict[str, Any]) -> subprocess.Popen[bytes]:
    values = {
        f"OMNISEG_{name.upper()}": str(value) for name, value in {**worker_env(settings), **overrides}.items()
    }
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    # The values go into the environment as well: a variable there wins over the file, so a shell that
    # loaded the stack's env file (`set -a; . .omniseg/omniseg.env`) would otherwise point the run's
    # workers at the stack's own database.
    env = {**os.environ, **values, "OMNISEG_ENV_FILE": str(env_file)}
    omniseg = str(Path(sys.executable).with_name("omniseg"))
    return subprocess.Popen([omniseg, "worker", "--log-level", "warning"], env=env, start_new_session=True)


def worker_env(settings: Settings) -> dict[str, Any]:
    return {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_partitions": settings.kafka_partitions,
        "kafka_linger_ms": settings.kafka_linger_ms,
        "topic_prefix": settings.topic_prefix,
        "clickhouse_host": settings.clickhouse_host,
        "clickhouse_port": settings.clickhouse_port,
        "clickhouse_database": settings.clickhouse_database,
        "sink_group": settings.sink_group,
        "identity_group": settings.identity_group,
        "segments_group": settings.segments_group,
        "audiences_group": settings.audiences_group,
        "segments_state_flush_s": settings.segments_state_flush_s,
    }


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


ROLES: dict[str, list[dict[str, Any]]] = {
    # one process runs every stage
    "single": [{}],
    # two processes of one worker: identity + sinks (+ the audience writer), and segments, as
    # docker-compose deploys them: the segment process keeps its core for the segment stage
    "split": [
        {"segments_enabled": False},
        {"sink_enabled": False, "identity_enabled": False, "audiences_enabled": False},
    ],
    # three: identity, the sinks, and segments (the OS schedules the resolver beside the sinks'
    # ClickHouse inserts instead of the GIL)
    "split3": [
        {"segments_enabled": False, "sink_enabled": False, "audiences_enabled": False},
        {"segments_enabled": False, "identity_enabled": False},
        {"sink_enabled": False, "identity_enabled": False, "audiences_enabled": False},
    ],
}


ROLE_NAMES = {
    "single": ["worker (all stages)"],
    "split": ["worker: identity + sinks + audiences", "worker: segments"],
    "split3": ["worker: identity", "worker: sinks", "worker: segments"],
}
