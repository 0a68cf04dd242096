"""One clear line, quickly, when a server a command needs is down.

Kafka clients retry a closed port for as long as their timeouts allow and log every attempt, and
clickhouse-driver logs a traceback before it raises; a command-line user wants neither. Commands that
need a server check it first with a short TCP connect (:func:`require_kafka`,
:func:`require_clickhouse`), and :func:`quiet_client_logs` keeps the client libraries' own retry
logs out of the terminal for the short-lived commands (servers and workers keep them).
"""

from __future__ import annotations

import logging
import socket

import click

from streams.settings import Settings

PROBE_TIMEOUT_S = 3.0
# The Python loggers the Kafka clients (librdkafka, through confluent-kafka) and clickhouse-driver
# write their connection attempts to.
_CLIENT_LOGGERS = ("streams.stages.identity.resolver.librdkafka", "clickhouse_driver")
_HINT = "is it running? (locally: omniseg dev up; omniseg dev status shows the local stack)"


class ServerDown(click.ClickException):
    """A server the command needs did not accept a connection."""


def quiet_client_logs() -> None:
    """Client libraries log nothing below CRITICAL; the command reports the failure itself."""
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _addresses(servers: str, default_port: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for entry in servers.split(","):
        entry = entry.strip().split("://")[-1]
        if not entry:
            continue
        host, _, port = entry.rpartition(":")
        if not host or not port.isdigit():
            host, port = entry, str(default_port)
        out.append((host.strip("[]"), int(port)))
    return out


def _first_reachable(addresses: list[tuple[str, int]], timeout_s: float) -> str | None:
    """None when one address accepts a TCP connection, else why the last one did not."""
    why = "no address given"
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return None
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError | socket.timeout):
                why = f"no answer within {timeout_s:g} s"
    return why.lower()


def require_kafka(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`ServerDown` unless a bootstrap server of ``settings`` accepts a connection."""
    why = _first_reachable(_addresses(settings.kafka_bootstrap, 9092), timeout_s)
    if why is not None:
        raise ServerDown(f"cannot reach Kafka at {settings.kafka_bootstrap} ({why}): {_HINT}")


def require_clickhouse(settings: Settings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`ServerDown` unless ClickHouse's native port accepts a connection."""
    address = f"{settings.clickhouse_host}:{settings.clickhouse_port}"
    why = _first_reachable([(settings.clickhouse_host, settings.clickhouse_port)], timeout_s)
    if why is not None:
        raise ServerDown(f"cannot reach ClickHouse at {address} ({why}): {_HINT}")
