"""The benches' latency reader: follows a topic from its current end in a thread.

``omniseg bench identity`` (``events.resolved``) and ``omniseg bench pipeline`` (``segments.changes``)
both time records from their send to the moment a plain consumer reads them downstream. The reader
starts at the current end, found by *reading* to it (docs/decisions/0009-end-of-partition-from-the-fetch.md),
and passes every later record, with the wall-clock time it was read, to the bench's handler.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.kafka.reading import consume_ready, partitions_of
from streams.settings import Settings

# After the sender finished, how long the reader may wait for the last records.
_GRACE_S = 60.0


class TailReader:
    """Calls ``on_record(value, read_at)`` for every record written to ``topic`` after :meth:`start`.

    ``done()`` (checked between batches) says when the bench has everything it waits for.
    """

    def __init__(
        self,
        settings: Settings,
        topic: str,
        on_record: Callable[[bytes, float], None],
        done: Callable[[], bool],
    ) -> None:
        self._on_record = on_record
        self._done = done
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "group.id": "bench-probe",  # assign only: never joined or committed
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "enable.partition.eof": True,
            }
        )
        self._partitions = partitions_of(self._consumer, topic, 30)
        self._consumer.assign([TopicPartition(topic, p, -2) for p in self._partitions])
        self._caught_up: set[int] = set()
        self._sent_all = threading.Event()
        self._thread = threading.Thread(target=self._read, name="bench-tail", daemon=True)

    @property
    def caught_up(self) -> bool:
        """Whether every partition reached the end it had at the start."""
        return len(self._caught_up) == len(self._partitions)

    def start(self, timeout_s: float = 120.0) -> None:
        """Start reading; returns once the reader is at the end of every partition."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.caught_up:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise TimeoutError(
                    f"the bench's reader did not reach the end of the topic within {timeout_s:.0f}s"
                )
            time.sleep(0.05)

    def finish(self, join_s: float = _GRACE_S + 30) -> None:
        """The sender is done: read on until ``done()`` or the grace period ends, then close."""
        self._sent_all.set()
        self._thread.join(join_s)
        self._consumer.close()

    def _read(self) -> None:
        give_up = float("inf")
        while not self._done() and time.monotonic() < give_up:
            if self._sent_all.is_set() and give_up == float("inf"):
                give_up = time.monotonic() + _GRACE_S
            for msg in consume_ready(self._consumer, 10_000, 0.1):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        self._caught_up.add(msg.partition())  # type: ignore[arg-type]
                    continue
                value = msg.value()
                if not self.caught_up or not value:
                    continue  # written before the start
                self._on_record(value, time.time())
