"""Checkpoints: the outputs of one or more turns and the input offsets they cover, committed in order.

A checkpoint's offsets may be committed only once every output of it (Kafka records, and its table
write if any) is acknowledged, and every earlier checkpoint's too: outputs are acknowledged out of
order, offsets must be committed in order. :class:`CheckpointQueue` keeps that rule in one place
(property-tested against a plain model in ``tests/unit/kafka/test_checkpoints.py``).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Any


class Checkpoint:
    """Offsets read and outputs outstanding; it is the delivery callback of each of its records.

    With ``tracked`` (a topic name), it also notes where its records of that topic landed: per
    partition, the offset and timestamp of the last one acknowledged (``produced``)."""

    __slots__ = ("failed", "offsets", "outstanding", "produced", "tracked", "write")

    def __init__(self, failed: list[tuple[Checkpoint, Any, Any]], tracked: str | None = None) -> None:
        self.offsets: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset read
        self.outstanding = 0
        self.failed = failed  # shared: (checkpoint, message, KafkaError) of records the broker refused
        self.write: Future[None] | None = None
        self.tracked = tracked
        self.produced: dict[int, tuple[int, int]] = {}  # partition -> (offset, timestamp ms)

    def __call__(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report."""
        if err is None:
            self.outstanding -= 1
            if self.tracked is not None and msg.topic() == self.tracked:
                partition, offset = msg.partition(), msg.offset()
                last = self.produced.get(partition)
                if last is None or offset > last[0]:
                    self.produced[partition] = (offset, msg.timestamp()[1])
        else:  # still outstanding: produced again after a backoff, or the stage stops
            self.failed.append((self, msg, err))

    def done(self) -> bool:
        return self.outstanding == 0 and (self.write is None or self.write.done())


class CheckpointQueue:
    """Closed checkpoints, oldest first, and the offsets they made committable."""

    __slots__ = ("_committable", "_queue", "_settled")

    def __init__(self) -> None:
        self._queue: deque[Checkpoint] = deque()
        self._committable: dict[tuple[str, int], int] = {}
        self._settled: list[Checkpoint] = []

    def __len__(self) -> int:
        return len(self._queue)

    def close(self, checkpoint: Checkpoint) -> None:
        self._queue.append(checkpoint)

    def settle(self) -> tuple[int, int]:
        """Move the offsets of the leading done checkpoints to the committable ones; returns how many
        checkpoints and how many of their table writes finished. A write that failed raises here, and
        its offsets stay uncommitted."""
        queue, committable = self._queue, self._committable
        settled = writes = 0
        while queue and queue[0].done():
            checkpoint = queue[0]
            if checkpoint.write is not None:
                checkpoint.write.result()
                writes += 1
            queue.popleft()
            committable.update(checkpoint.offsets)
            if checkpoint.tracked is not None:
                self._settled.append(checkpoint)
            settled += 1
        return settled, writes

    def take_settled(self) -> list[Checkpoint]:
        """The settled checkpoints that track a topic, oldest first, since the last call."""
        settled, self._settled = self._settled, []
        return settled

    def take(self) -> dict[tuple[str, int], int]:
        """The last offset read per partition whose checkpoints are all done (then forgotten)."""
        committable, self._committable = self._committable, {}
        return committable

    def pending_writes(self) -> list[Future[None]]:
        return [c.write for c in self._queue if c.write is not None and not c.write.done()]
