"""The newest audience deltas, read from ``audiences.deltas`` itself, for the pull API (decision 0019).

The audiences sink writes deltas to ClickHouse in batches; the pull API answers from ClickHouse up to
its frontier (:func:`streams.warehouse.audiences.frontier`). A :class:`DeltaTail` is a thread of the API
process that reads the topic (``read_committed``, one partition) from ClickHouse's frontier on and keeps
the records ClickHouse does not have yet, so a delta is visible as soon as the audience writer's
transaction commits, not one sink batch and two inserts later.

What it holds is exact: every record of the topic at an offset in ``[low, end)`` that the sink would
write (the same checks, :func:`streams.sinks.audience_tables.check_delta`), where ``end`` is where its
reader stands (after a transaction's commit marker, never inside an open transaction). Records below
ClickHouse's frontier are dropped (:meth:`DeltaTail.read` takes the frontier each time), so memory is
the sink's lag, at most ``max_records`` (then it stops reading until the sink catches up).
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streams.kafka.config import consumer_config
from streams.kafka.reading import consume_ready
from streams.settings import Settings
from streams.sinks.audience_tables import check_delta
from streams.topics import AUDIENCE_DELTAS_TOPIC
from streams.warehouse.audiences import DeltaRow
from streams.wire.audiences import decode_delta
from streams.wire.codecs import SerializationError

log = logging.getLogger("streams.api.delta_tail")

_POLL_S = 0.05
_RETRY_S = 5.0
_ERROR_WAIT_S = 1.0


class TailRow(NamedTuple):
    offset: int
    destination_id: str
    audience_id: str
    kind: str
    hash: str
    added: bool


class DeltaTail:
    """Reads ``audiences.deltas`` from ``start_at()`` (ClickHouse's frontier) on, in a thread."""

    def __init__(self, settings: Settings, start_at: Callable[[], int], max_records: int = 1_000_000) -> None:
        self._settings = settings
        self._start_at = start_at
        self._max = max_records
        self._topic = settings.topic(AUDIENCE_DELTAS_TOPIC.name)
        self._lock = threading.Condition()
        self._offsets: list[int] = []
        self._rows: list[TailRow] = []
        self._low = -1  # every record at an offset in [low, end) is held; -1: not started
        self._end = -1
        self._last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audience-delta-tail", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    @property
    def end(self) -> int:
        """Where the reader stands (-1 before it started)."""
        with self._lock:
            return self._end

    def read(
        self, frontier: int, destination_id: str, audience: str, start: int, limit: int
    ) -> tuple[list[DeltaRow], int] | None:
        """The audience's rows at offsets from ``max(start, frontier)`` on, at most ``limit``, and the
        end they run to, when the tail holds every record from ``frontier`` (ClickHouse's) on; else
        None. Drops what ClickHouse has (below ``frontier``)."""
        with self._lock:
            self._trim(frontier)
            if not self._low <= frontier <= self._end:
                return None
            first = bisect.bisect_left(self._offsets, max(start, frontier))
            found: list[DeltaRow] = []
            for row in self._rows[first:]:
                if row.destination_id == destination_id and row.audience_id == audience:
                    found.append((row.offset, row.kind, row.hash, int(row.added)))
                    if len(found) == limit:
                        break
            return found, self._end

    def wait_for(self, offset: int, timeout_s: float) -> bool:
        """Wait until the reader reached ``offset`` (a cursor another API process gave out)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._end < offset:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._lock.wait(left)
            return True

    def _trim(self, frontier: int) -> None:
        if self._low < 0 or frontier <= self._low:
            return
        self._low = min(frontier, self._end)
        cut = bisect.bisect_left(self._offsets, self._low)
        if cut:
            del self._offsets[:cut]
            del self._rows[:cut]

    # -- the reader thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                start = self._start_at()
            except Exception as exc:  # ClickHouse not there yet: deltas are served from it alone
                log.warning("audience delta tail: cannot read ClickHouse's frontier (%s); retrying", exc)
                self._stop.wait(_RETRY_S)
                continue
            try:
                self._follow(start)
            except Exception:
                log.exception("audience delta tail stopped; restarting it from ClickHouse's frontier")
                with self._lock:
                    self._low = self._end = -1
                    self._offsets, self._rows = [], []
                self._stop.wait(_RETRY_S)

    def _follow(self, start: int) -> None:
        consumer = Consumer(
            consumer_config(
                self._settings,
                group=f"{self._settings.sink_group}.audiences-tail",  # assign only, never committed
                client_id="omniseg-api-delta-tail",
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 20},
            )
        )
        self.begin(start)
        try:
            consumer.assign([TopicPartition(self._topic, 0, start)])
            while not self._stop.is_set():
                with self._lock:
                    full = len(self._rows) >= self._max
                if full:  # the sink is behind: read on once it caught up
                    self._stop.wait(_POLL_S)
                    continue
                self._take(consume_ready(consumer, 10_000, _POLL_S))
        finally:
            consumer.close()

    def _take(self, messages: list[Message]) -> None:
        rows: list[TailRow] = []
        end = -1
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    end = max(end, msg.offset() or 0)
                    continue
                if error.str() != self._last_error:  # once, not on every poll (an unknown topic)
                    log.warning(
                        "audience delta tail: %s (deltas come from ClickHouse meanwhile)", error.str()
                    )
                    self._last_error = error.str()
                self._stop.wait(_ERROR_WAIT_S)
                continue
            offset: int = msg.offset()  # type: ignore[assignment]
            end = max(end, offset + 1)
            value = msg.value()
            if value is None:
                continue
            try:
                delta, _at = decode_delta(value)
                check_delta(delta)
            except SerializationError:
                continue  # the sink routes it to events.invalid: no row in ClickHouse either
            rows.append(
                TailRow(
                    offset, delta.destination_id, delta.audience_id, str(delta.kind), delta.hash, delta.added
                )
            )
        if end >= 0:
            self.hold(rows, end)

    def hold(self, rows: list[TailRow], end: int) -> None:
        """Keep ``rows``, the records read after the previous end, and move the end to ``end``."""
        with self._lock:
            self._offsets.extend(row.offset for row in rows)
            self._rows.extend(rows)
            self._end = max(self._end, end)
            self._lock.notify_all()

    def begin(self, start: int) -> None:
        """Hold nothing, from ``start`` (ClickHouse's frontier) on."""
        with self._lock:
            self._offsets, self._rows = [], []
            self._low = self._end = start
