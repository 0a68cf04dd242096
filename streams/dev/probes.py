"""Readiness probes: is a broker or a ClickHouse server answering right now?"""

from __future__ import annotations

import logging
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.errors import Error as ClickHouseError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient


def kafka_ready(bootstrap: str, timeout_s: float = 1.0) -> bool:
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "log_level": 0, "logger": _quiet}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def clickhouse_ready(host: str, port: int) -> bool:
    # clickhouse-driver logs every refused connection as an error with a traceback; while polling
    # for readiness a refusal is expected, so keep its connection logger quiet here.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.CRITICAL)
    client = Client(host=host, port=port, connect_timeout=1, send_receive_timeout=2)
    try:
        client.execute("SELECT 1")
    except (ClickHouseError, OSError, EOFError):
        return False
    finally:
        client.disconnect()
    return True


class _Quiet:
    def log(self, *_args: object) -> None:
        return None


_quiet = _Quiet()


def http_healthy(port: int, path: str = "/ready") -> bool:
    """True when a local HTTP service answers 200 on ``path``."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", path)
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        return False
    return ok
