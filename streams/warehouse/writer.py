"""Columnar inserts into ClickHouse that survive a server outage: retry with exponential backoff.

The caller blocks in :meth:`ClickHouseWriter.insert` until the rows are in, which is what makes the
sink apply backpressure instead of buffering: it reads no more from Kafka while an insert is pending.
Each failed attempt logs one line (no traceback); the first success after failures logs one more.

On a cluster (``OMNISEG_CLICKHOUSE_CLUSTER``), rows go into the replicated ``<table>_local`` of the
server the writer is connected to, and replication copies them to the other replicas. A replicated
table drops a block identical to one it already holds (insert deduplication, shared by every replica
through ZooKeeper), so a retried insert, on the same replica or another, stores the rows once. For the
retry to be identical, columns that default to ``now()`` (``ingested_at``) are not left to the server:
the writer fills them with the insert's ``stamp``, the same on every attempt.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from streams.settings import Settings
from streams.warehouse.cluster import local_name

log = logging.getLogger("streams.warehouse.writer")

_FIRST_BACKOFF_S = 0.2
# Raised by the driver or the socket when the server is away or answers with an error. A server-side
# error (e.g. table missing, too many parts) is retried too: the rows are kept until it is fixed.
RETRYABLE: tuple[type[BaseException], ...] = (
    ch_errors.Error,
    OSError,
    EOFError,
)
# Raised before anything is sent when our columns do not fit the table: a bug, retrying cannot help.
NOT_RETRYABLE: tuple[type[BaseException], ...] = (
    ch_errors.TypeMismatchError,
    ch_errors.LogicalError,
)


class WriteAbandoned(RuntimeError):
    """The insert did not succeed before the caller gave up (shutdown while ClickHouse is down)."""


Wait = Callable[[float], bool]


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True


def client_for(settings: Settings) -> Client:
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=settings.clickhouse_database,
        connect_timeout=5,
        send_receive_timeout=60,
        client_name="omniseg-history-sink",
    )


class ClickHouseWriter:
    """One native-protocol connection, reopened after any failure."""

    def __init__(self, settings: Settings, client_factory: Callable[[], Client] | None = None) -> None:
        self._factory = client_factory or (lambda: client_for(settings))
        self._max_backoff_s = settings.sink_retry_max_backoff_s
        self._where = f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
        self._client: Client | None = None
        self._cluster = bool(settings.clickhouse_cluster)
        self._now_columns: dict[str, tuple[str, ...]] = {}
        self.failed_attempts = 0

    def insert(
        self,
        table: str,
        column_names: Sequence[str],
        columns: list[list[Any]],
        rows: int,
        *,
        wait: Wait = _sleep,
        stamp: int | None = None,
    ) -> None:
        """Insert the columns, retrying until it succeeds.

        ``wait(seconds)`` is called between attempts and may keep the caller alive meanwhile (the sink
        polls Kafka there so it keeps its group membership); it returns False to give up, and then
        :class:`WriteAbandoned` is raised with the rows not written. ``stamp`` (Unix seconds, default
        now) fills the columns that default to ``now()`` on a cluster (see the module doc).
        """
        stamp = int(time.time()) if stamp is None else stamp
        attempt = 0
        delay = _FIRST_BACKOFF_S
        while True:
            try:
                if self._client is None:
                    self._client = self._factory()
                target, names, data = table, list(column_names), columns
                if self._cluster:
                    target = local_name(table)
                    stamped = [name for name in self._stamped(target) if name not in names]
                    names += stamped
                    data = [*columns, *([[stamp] * rows] * len(stamped))]
                statement = f"INSERT INTO {target} ({', '.join(names)}) VALUES"
                self._client.execute(statement, data, columnar=True)
            except NOT_RETRYABLE:
                raise
            except RETRYABLE as exc:
                attempt += 1
                self.failed_attempts += 1
                self.close()
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                log.warning(
                    "ClickHouse %s: insert of %d rows into %s failed (attempt %d): %s: %s; "
                    "retrying in %.1fs, Kafka consumption paused",
                    self._where,
                    rows,
                    table,
                    attempt,
                    type(exc).__name__,
                    reason,
                    delay,
                )
                if not wait(delay):
                    raise WriteAbandoned(
                        f"gave up inserting {rows} rows into {table} after {attempt} attempts"
                    ) from None
                delay = min(delay * 2, self._max_backoff_s)
                continue
            if attempt:
                log.warning(
                    "ClickHouse %s is back: inserted %d rows into %s after %d failed attempts",
                    self._where,
                    rows,
                    table,
                    attempt,
                )
            return

    def _stamped(self, table: str) -> tuple[str, ...]:
        """The columns of ``table`` whose default is ``now()`` (asked once per table)."""
        if table not in self._now_columns:
            assert self._client is not None
            rows = self._client.execute(
                "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = %(t)s "
                "AND default_kind = 'DEFAULT' AND replaceAll(default_expression, ' ', '') = 'now()'",
                {"t": table},
            )
            self._now_columns[table] = tuple(name for (name,) in rows)
        return self._now_columns[table]

    def close(self) -> None:
        if self._client is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._client.disconnect()
            self._client = None
