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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streams.kafka.config import producer_config as kafka_producer_config
from streams.settings import Settings

log = logging.getLogger(__name__)

_POLL_INTERVAL_S = 0.05
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

    __slots__ = ("error", "future", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, pending: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = pending
        self.error: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            if self.error is None:
                self.error = f"{msg.topic()}: {err.str()}"
                self.loop.call_soon_threadsafe(self._finish)
            return
        self.pending -= 1
        if self.pending == 0:
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


class AsyncProducer:
    """Owns one confluent-kafka Producer and the thread that polls it."""

    def __init__(self, settings: Settings, client_id: str = "omniseg-collector") -> None:
        config = producer_config(settings, client_id)
        config["error_cb"] = self._on_error
        config["logger"] = logging.getLogger("streams.api.producer.librdkafka")
        self._timeout_s = settings.produce_timeout_s
        self._producer = Producer(config)
        self._fatal: str | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, name="collector-producer-poll", daemon=True)

    @property
    def fatal_error(self) -> str | None:
        return self._fatal

    @property
    def last_error(self) -> str | None:
        return self._last_error

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

    def _poll_loop(self) -> None:
        # This thread must outlive any error: without it no delivery resolves and every request 503s.
        while not self._stop.is_set():
            try:
                self._producer.poll(_POLL_INTERVAL_S)
            except Exception:
                log.exception("collector producer: a delivery callback failed")

    def _on_error(self, err: KafkaError) -> None:
        self._last_error = err.str()
        if err.fatal():
            self._fatal = err.str()
            log.error("collector producer fatal error: %s", err.str())
        else:
            log.warning("collector producer error: %s", err.str())

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Produce every record and wait until all are acknowledged; raise ProduceError otherwise."""
        if not records:
            return
        if self._fatal is not None:
            raise ProduceError(f"the producer hit a fatal error and must be restarted: {self._fatal}")
        loop = asyncio.get_running_loop()
        countdown = _Countdown(loop, len(records))
        deadline = time.monotonic() + self._timeout_s
        produce = self._producer.produce
        index = 0
        try:
            while index < len(records):
                record = records[index]
                try:
                    produce(record.topic, record.value, record.key, on_delivery=countdown)
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
            raise ProduceError(
                f"the broker did not acknowledge {countdown.pending} of {len(records)} records "
                f"within {self._timeout_s:g}s"
                + (f" (last error: {self._last_error})" if self._last_error else "")
            ) from None

    async def check(self, timeout_s: float = 2.0) -> dict[str, Any]:
        """Ask the broker for metadata; raise ProduceError when it does not answer."""
        if self._fatal is not None:
            raise ProduceError(f"the producer hit a fatal error: {self._fatal}")
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except KafkaException as exc:
            raise ProduceError(f"the broker did not answer a metadata request: {exc}") from exc
        return {"brokers": len(metadata.brokers), "topics": set(metadata.topics)}
