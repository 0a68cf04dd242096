"""When a stage's producer sends: sooner than librdkafka's linger once the stage has drained its input
(docs/decisions/0006-producer-pacing.md)."""

from __future__ import annotations

import time

from confluent_kafka import Producer

# A flush this short starts sending every lingering batch but does not wait for the acknowledgements.
_SEND_NOW_S = 0.001
# A drained stage sends at most this many times per interval (see Sender.drained).
DRAINED_GAP_DIVISOR = 5
# librdkafka's linger for a producer that only a Sender's ticks send for (a load generator on a schedule).
PACED_LINGER_MS = 1000


class Sender:
    """Sends a producer's waiting records sooner than librdkafka's linger would.

    A stage's producer (:func:`paced_producer_config`) lingers ``kafka_linger_ms``, librdkafka's own
    per-partition linger: under a backlog that alone paces its sends, one ProduceRequest per partition
    per interval (librdkafka never puts two partitions in one request: confluentinc/librdkafka#1700).

    A stage that reads another stage's output gets its input in bursts, one per upstream send. Holding
    its own output for a whole interval after each burst would add a second linger on every hop, so
    :meth:`drained` (called when a turn handled everything that had arrived) sends at once: a flush,
    during which librdkafka ignores ``linger.ms`` for every partition. It does so at most every
    ``interval / DRAINED_GAP_DIVISOR``: about one send per upstream burst, the same request rate; what
    a drained turn holds back goes when the gap is over (the stage waits for input at most that long,
    :meth:`drained_wait_s`, and a turn that found nothing has drained too).

    A stage under a backlog never drains, so it never flushes (a flush blocks the loop:
    docs/decisions/0006-producer-pacing.md). A record waits at most the interval plus one loop turn.

    :meth:`tick` sends on a schedule instead: for a producer with a long linger (``PACED_LINGER_MS``)
    that must send every interval whatever happens, like the bench's load generators.
    """

    __slots__ = ("_gap", "_interval", "_last", "_producer", "pending")

    def __init__(self, producer: Producer, interval_ms: int) -> None:
        self._producer = producer
        self._interval = interval_ms / 1000
        self._gap = self._interval / DRAINED_GAP_DIVISOR
        self._last = -self._interval  # monotonic time of the last send
        self.pending = False  # records produced since the last send

    def wait_s(self, longest: float) -> float:
        """How long the loop may wait for input before :meth:`tick` is due (``longest`` at most)."""
        if not self.pending:
            return longest
        return min(longest, max(0.0, self._last + self._interval - time.monotonic()))

    def drained_wait_s(self, longest: float) -> float:
        """How long a drained stage may wait for input before :meth:`drained` would send what it holds
        back (``longest`` at most): records a drained turn kept because a send was just made go once
        the gap has passed, not after librdkafka's whole linger."""
        if not self.pending:
            return longest
        return min(longest, max(0.0, self._last + self._gap - time.monotonic()))

    def tick(self) -> None:
        """Send what is waiting if the interval has passed since the last send."""
        if self.pending and (now := time.monotonic()) >= self._last + self._interval:
            self._send(now)

    def drained(self) -> None:
        """The stage handled all its input so far: send what is waiting unless a send was just made."""
        if self.pending and (now := time.monotonic()) >= self._last + self._gap:
            self._send(now)

    def _send(self, now: float) -> None:
        self.pending = False
        self._last = now
        self._producer.flush(_SEND_NOW_S)
