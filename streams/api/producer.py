"""An asyncio face on confluent-kafka's producer: ``await send_all(records)`` returns once the broker
acknowledged every record (acks=all, idempotent), or raises :class:`ProduceError`.

One background thread polls the producer, so delivery callbacks run there; each request gets a single
future that the last delivery resolves, which keeps the event loop free of per-record awaits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.kafka.config import producer_config as kafka_producer_config
from streams.kafka.errors import is_delivery_timeout, needs_new_producer
from streams.settings import Settings

log = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.05
_REBUILD_MIN_S = 1.0
_REBUILD_MAX_S = 30.0
_QUEUE_FULL_BACKOFF_S = 0.005


class ProduceError(RuntimeError):
    """The broker did not acknowledge a record (failed or timed out); the message says why."""


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes
    value: bytes


class _Countdown:
    """Resolves one future when ``pending`` deliveries have all succeeded, or at the first failure.

    ``__call__`` runs on the poll thread only, so ``pending`` has a single writer; the future is only
    touched on the event loop thread (``_finish``), where ``done()`` guards a second resolution.
    """

    __slots__ = ("error", "future", "loop", "owner", "pending")

    def __init__(self, owner: AsyncProducer, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.owner = owner
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.owner.delivery_failed(err)
            if self.error is None:
                self.error = f"{msg.topic()}: {err.str()}"
                self.loop.call_soon_threadsafe(self._finish)
            return
        self.pending -= 1
        if self.pending == 0:
            self.owner.delivered()
            self.loop.call_soon_threadsafe(self._finish)

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self._finish()

    def _finish(self) -> None:
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(ProduceError(f"the broker did not accept the records: {self.error}"))
        else:
            self.future.set_result(None)


def producer_config(settings: Settings, client_id: str = "omniseg-collector") -> dict[str, Any]:
    """The pipeline's producer settings (:func:`streams.kafka.config.producer_config`: idempotent,
    acks=all, lz4, murmur2 like Java clients and Faust) with a short linger, because a collector call
    waits for its records' acknowledgement."""
    return kafka_producer_config(
        settings,
        client_id,
        **{
            "linger.ms": 5,
            # librdkafka gives up on a record when the request that carried it has already answered 503.
            "message.timeout.ms": max(1000, int(settings.produce_timeout_s * 1000)),
            "queue.buffering.max.messages": 500_000,
        },
    )


@dataclass(frozen=True, slots=True)
class Readiness:
    """Whether the producer can take records now, and why not."""

    ready: bool
    reason: str = ""
    brokers: int = 0
    topics: frozenset[str] = frozenset()


class AsyncProducer:
    """Owns one confluent-kafka Producer, the thread that polls it, and its replacement.

    Recovery: a delivery report or error callback that says this producer can never deliver again
    (fenced, fatal, producer-state errors) or a record the broker never acknowledged marks the producer
    broken; the poll thread then builds a new one and purges the old one, whose waiting requests get
    503 (clients retry; downstream stages deduplicate by ``messageId``). Replacements back off from
    ``_REBUILD_MIN_S`` to ``_REBUILD_MAX_S`` while they keep failing, and reset on a delivery.
    """

    def __init__(
        self,
        settings: Settings,
        client_id: str = "omniseg-collector",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        config = producer_config(settings, client_id)
        config["error_cb"] = self._on_error
        config["logger"] = logging.getLogger("streams.api.producer.librdkafka")
        self._config = config
        self._clock = clock
        self._timeout_s = settings.produce_timeout_s
        self._producer = Producer(config)
        # Written on the poll thread only (callbacks run there); read anywhere.
        self._broken: str | None = None
        self._last_error: str | None = None
        self._last_failure: str | None = None
        self._failed_at = -1.0
        self._delivered_at = -1.0
        self._replacements = 0
        self._next_rebuild_at = 0.0
        self._rebuild_backoff_s = _REBUILD_MIN_S
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="collector-producer-poll", daemon=True)

    @property
    def broken(self) -> str | None:
        """Why the current producer is being replaced, or None."""
        return self._broken

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def replacements(self) -> int:
        """How many times the producer was replaced since start."""
        return self._replacements

    @property
    def alive(self) -> bool:
        """The poll thread runs (without it no delivery resolves)."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def close(self, flush_timeout_s: float = 30.0) -> int:
        """Stop polling and flush; returns how many records were still undelivered."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        remaining: int = self._producer.flush(flush_timeout_s)
        if remaining:
            log.error("collector producer: %d records not delivered at shutdown", remaining)
        return remaining

    # -- the poll thread ----------------------------------------------------------------------------

    def _poll_loop(self) -> None:
        # This thread must outlive any error: without it no delivery resolves and every request 503s.
        while not self._stop.is_set():
            try:
                if self._broken is not None and self._clock() >= self._next_rebuild_at:
                    self._replace()
                self._producer.poll(_POLL_INTERVAL_S)
            except Exception:
                log.exception("collector producer: a delivery callback failed")

    def _replace(self) -> None:
        reason, old = self._broken, self._producer
        try:
            self._producer = Producer(self._config)
        except KafkaException as exc:
            log.error("collector producer: cannot build a replacement (%s); retrying", exc)
            self._next_rebuild_at = self._clock() + self._rebuild_backoff_s
            return
        self._broken = None
        self._replacements += 1
        self._next_rebuild_at = self._clock() + self._rebuild_backoff_s
        self._rebuild_backoff_s = min(self._rebuild_backoff_s * 2, _REBUILD_MAX_S)
        log.warning(
            "collector producer replaced (%d since start) after: %s; its waiting requests get 503",
            self._replacements,
            reason,
        )
        # The old producer's records fail now, so their requests are answered at once.
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.flush(1.0)
        except KafkaException as exc:
            log.warning("collector producer: purging the replaced producer failed: %s", exc)

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        if needs_new_producer(err):
            self._mark_broken(err.str())
            log.error("collector producer error that needs a new producer: %s", err.str())
        else:
            log.warning("collector producer error: %s", err.str())

    def _mark_broken(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason

    def delivery_failed(self, err: KafkaError) -> None:
        """Poll thread: a record was not delivered."""
        self._failed_at = self._clock()
        self._last_failure = err.str()
        if needs_new_producer(err) or is_delivery_timeout(err):
            self._mark_broken(err.str())

    def delivered(self) -> None:
        """Poll thread: a request's records were all acknowledged."""
        self._delivered_at = self._clock()
        self._rebuild_backoff_s = _REBUILD_MIN_S

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Produce every record and wait until all are acknowledged; raise ProduceError otherwise."""
        if not records:
            return
        if self._broken is not None:
            raise ProduceError(f"the producer is being replaced after: {self._broken}")
        loop = asyncio.get_running_loop()
        countdown = _Countdown(self, loop, len(records))
        deadline = time.monotonic() + self._timeout_s
        index = 0
        try:
            while index < len(records):
                record = records[index]
                try:
                    self._producer.produce(record.topic, record.value, record.key, on_delivery=countdown)
                except BufferError:
                    # The local queue is full: the poll thread is draining it; wait a moment.
                    if time.monotonic() >= deadline:
                        raise ProduceError(
                            "the producer queue stayed full; the broker is too slow or unreachable"
                        ) from None
                    await asyncio.sleep(_QUEUE_FULL_BACKOFF_S)
                    continue
                index += 1
        except KafkaException as exc:
            countdown.fail(str(exc))
        except ProduceError as exc:
            countdown.fail(str(exc))
        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(countdown.future), timeout=max(remaining, 0.0))
        except TimeoutError:
            # The reports still come (failed, or late); nobody awaits the future any more.
            countdown.future.add_done_callback(_retrieve)
            raise ProduceError(
                f"the broker did not acknowledge {countdown.pending} of {len(records)} records "
                f"within {self._timeout_s:g}s"
                + (f" (last error: {self._last_error})" if self._last_error else "")
            ) from None

    async def readiness(self, timeout_s: float = 2.0) -> Readiness:
        """Ready when the producer is not being replaced, its last failure is older than its last
        delivery (or than two produce timeouts), and the broker answers a metadata request."""
        if self._broken is not None:
            return Readiness(False, f"the Kafka producer is being replaced after: {self._broken}")
        now = self._clock()
        if self._failed_at > self._delivered_at and now - self._failed_at < 2 * self._timeout_s:
            return Readiness(False, f"the broker did not acknowledge the last records: {self._last_failure}")
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except KafkaException as exc:
            return Readiness(False, f"the broker did not answer a metadata request: {exc}")
        return Readiness(True, brokers=len(metadata.brokers), topics=frozenset(metadata.topics))


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
