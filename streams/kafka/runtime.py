"""The one stage runtime: consume a batch, call the step, produce its outputs, wait for the acknowledgements,
commit; refused inputs go to ``events.invalid`` with their reason; counters in :class:`RuntimeStats`.

Every stage (the identity resolver and link writer, the segment stage, the ClickHouse sinks) is a
:class:`~streams.kafka.stage.StageSpec` plus a :class:`~streams.kafka.stage.Step` run by this loop in a
thread that :mod:`streams.kafka.hosting` starts and stops with the Faust worker
(docs/decisions/0004-one-stage-runtime-hosted-by-faust.md).

Guarantees
----------
- At least once: the outputs of a checkpoint are all the records the step emitted since the previous
  one, and its table write if the step returned one. Its input offsets are committed only once every
  output of it and of every earlier checkpoint is acknowledged. A stage's outputs are idempotent
  downstream (message ids, change ids, natural keys), so a replay after a crash is harmless.
- Nothing is lost on bad input: a refused record goes to ``events.invalid`` (stage, reason, field,
  source topic, ``partition/offset``, original bytes) as an output of its checkpoint.
- Backpressure: at most ``max_inflight`` checkpoints wait for the broker or for ClickHouse; beyond that
  the loop waits. While a table write is retried, the partitions are paused and the consumer only polls
  to keep its group membership, so memory stays bounded.
- Rebalance: before partitions go, the step flushes what it holds, the checkpoint is written and
  committed (within ``_REVOKE_WAIT_S``), then the step drops their state. Offsets are committed only for
  partitions still assigned.
- Transactional specs put each turn's outputs in one Kafka transaction, then commit the offsets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as future_wait
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams.kafka.checkpoints import Checkpoint, CheckpointQueue
from streams.kafka.config import consumer_config, paced_producer_config, producer_config
from streams.kafka.health import StageHealth
from streams.kafka.outbox import Outbox
from streams.kafka.reading import consume_ready
from streams.kafka.sending import Sender
from streams.kafka.stage import Outputs, StageSpec, Step
from streams.settings import Settings
from streams.topics import INVALID_TOPIC

log = logging.getLogger("streams.kafka.runtime")

_REVOKE_WAIT_S = 10.0
_POLL_WHILE_PAUSED_S = 0.25
_TIMEOUT_S = 60.0
# The most records one read gathers (a sink's batch may take several).
_GATHER_MAX = 10_000
# How often the lag of the assigned partitions is read (local: positions and cached watermarks), and
# without partitions, the group's (broker requests: committed offsets and watermarks).
_LAG_EVERY_S = 1.0
_GROUP_LAG_EVERY_S = 5.0


@dataclass
class RuntimeStats:
    """Counters since start (one writer: the stage thread; read from any)."""

    records: int = 0
    sent: int = 0
    refused: int = 0
    checkpoints: int = 0
    commits_failed: int = 0
    started_at: float = field(default_factory=time.monotonic)


class _Claim:
    """:class:`~streams.kafka.stage.Claim` on the runtime's consumer."""

    def __init__(self, consumer: Consumer | None) -> None:
        self._consumer = consumer
        self.starts: dict[tuple[str, int], int] = {}

    def committed(self, topic: str, partition: int) -> int:
        assert self._consumer is not None
        tp = self._consumer.committed([TopicPartition(topic, partition)], _TIMEOUT_S)[0]
        return tp.offset if tp.offset >= 0 else 0

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self.starts[(topic, partition)] = offset


class StageRuntime:
    """Runs one stage. :meth:`run` blocks until :meth:`stop` (any thread)."""

    def __init__(self, settings: Settings, spec: StageSpec, step: Step) -> None:
        self.settings = settings
        self.spec = spec
        self.step = step
        self.runtime_stats = RuntimeStats()
        self.ready = threading.Event()  # set once the step is ready and partitions are assigned
        self.abandon = threading.Event()  # table writes give up (set after the stop grace)
        self._stop = threading.Event()
        self._outbox = Outbox(
            spec.name, settings.topic(INVALID_TOPIC.name), retry=spec.retry_failed_sends, stop=self._stop
        )
        self._failed = self._outbox.failed
        self._current = Checkpoint(self._failed, self.spec.track_produced)
        self._sealing: Checkpoint | None = None  # a checkpoint still writing its outputs
        self._inflight = CheckpointQueue()
        self._next_commit = 0.0
        self._assigned: set[tuple[str, int]] = set()
        self._paused = False
        self._deferred: list[Message] = []
        # While a revocation or a stop drains: the time to give up waiting, and whether the consumer
        # may be polled (not from inside its own rebalance callback).
        self._give_up_at: float | None = None
        self._in_callback = False
        self._out = Outputs()
        self._pool: ThreadPoolExecutor | None = None
        self._last_error = ""
        self.consumer: Consumer | None = None
        self._sender: Sender | None = None
        self.health = StageHealth()
        self.restart_reason: str | None = None  # set by :meth:`restart`
        self._next_lag = 0.0
        self._next_group_lag = 0.0
        self._group_committed = -1

    @property
    def producer(self) -> Producer | None:
        return self._outbox.producer

    @producer.setter
    def producer(self, producer: Producer | None) -> None:
        self._outbox.producer = producer

    # -- the Loop protocol of streams.kafka.hosting -------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    def restart(self, reason: str) -> None:
        """Ask :meth:`run` to write what it holds, commit and return, so that the supervisor starts the
        stage again (a new consumer rejoins the group). Any thread."""
        self.restart_reason = reason
        self._stop.set()

    def run(self) -> None:
        spec, settings = self.spec, self.settings
        gc.set_threshold(spec.gc_young_threshold, 20, 20)
        client_id = f"omniseg-{spec.name}"
        consumer = Consumer(consumer_config(settings, spec.group, client_id, **spec.consumer))
        self.consumer = consumer
        if not spec.transactional:
            make = paced_producer_config if spec.paced else producer_config
            self.producer = Producer(make(settings, client_id, **spec.producer))
            self._sender = Sender(self.producer, settings.kafka_linger_ms) if spec.paced else None
        try:
            self.step.start()
            consumer.subscribe(list(spec.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
            log.info("%s: consuming %s as group %s", spec.name, ", ".join(spec.topics), spec.group)
            self._loop(consumer)
            self._finish()
        finally:
            self.abandon.set()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            try:
                consumer.close()
            finally:
                self.step.close()
                if self.producer is not None:
                    self.producer.flush(5)
        stats = self.runtime_stats
        log.info(
            "%s stopped: %d records, %d sent, %d refused, %d checkpoints",
            spec.name,
            stats.records,
            stats.sent,
            stats.refused,
            stats.checkpoints,
        )

    # -- the loop -----------------------------------------------------------------------------------

    def _loop(self, consumer: Consumer) -> None:
        spec, step, out, stats = self.spec, self.step, self._out, self.runtime_stats
        limit = spec.batch_size
        health = self.health
        while not self._stop.is_set():
            self._settle()
            now = health.last_turn
            if now >= self._next_lag:
                self._measure_lag(consumer, now)
            health.step_ready = step.ready()
            step.before_turn(out)
            if len(out):
                self._send(out)
            if not step.ready():
                msg = consumer.poll(spec.wait_s)  # rebalance callbacks run meanwhile
                if msg is not None:
                    self._deferred.append(msg)  # kept for when the step is ready
                continue
            messages = self._deferred or self._read(consumer, limit)
            self._deferred = []
            handled = len(messages)
            if handled:
                health.last_progress = now
                records = self._positions(messages)
                stats.records += len(records)
                if spec.transactional:
                    self._transaction(records)
                    continue
                step.process(records, out)
                del records
                messages.clear()  # released now: a checkpoint or a freeze below would walk them
                if len(out):
                    self._send(out)
            sender = self._sender
            if sender is not None and handled < limit:
                sender.drained()  # everything that had arrived is handled: its outputs go now
            step.after_turn(handled, out)
            if len(out):
                self._send(out)
            if self._sealing is not None and not step.sealing:
                self._close_sealing()
            if (handled or self._current.offsets or self._current.outstanding) and step.checkpoint_due(
                handled
            ):
                self._checkpoint()
            if not self.ready.is_set() and consumer.assignment():
                self.ready.set()

    def _read(self, consumer: Consumer, limit: int) -> list[Message]:
        if self.spec.gather and self.step.gathering():
            return consumer.consume(min(limit, _GATHER_MAX), self._wait_s())
        return consume_ready(consumer, limit, self._wait_s())

    def _wait_s(self) -> float:
        if self.step.sealing:
            return 0.0  # a checkpoint is being written: keep turning
        longest = self.step.wait_s(self.spec.wait_s)
        sender = self._sender
        return sender.drained_wait_s(longest) if sender is not None else longest

    def _positions(self, messages: list[Message]) -> list[Message]:
        """Note each record's offset in the current checkpoint; Kafka errors are logged, not handed on,
        and the end of a partition (a consumer with ``enable.partition.eof``) goes to the step."""
        offsets = self._current.offsets
        clean = True
        for msg in messages:
            if msg.error() is not None:
                clean = False
                continue
            offsets[(msg.topic(), msg.partition())] = msg.offset()  # type: ignore[index,assignment]
        if clean:
            return messages
        for msg in messages:
            error = msg.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                self.step.reached_end(msg.topic(), msg.partition())  # type: ignore[arg-type]
            else:
                self._kafka_error(error)
        return [msg for msg in messages if msg.error() is None]

    def _kafka_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        text = error.str()
        if text != self._last_error:
            self._last_error = text
            log.warning("%s: Kafka reported: %s", self.spec.name, text)

    def _send(self, out: Outputs, checkpoint: Checkpoint | None = None) -> None:
        """Produce ``out`` as outputs of ``checkpoint`` (the current one by default); empties ``out``."""
        refused = len(out.refused)
        count = self._outbox.send(out, checkpoint or self._current, self._sealing)
        self.runtime_stats.sent += count
        self.runtime_stats.refused += refused
        if count and self._sender is not None:
            self._sender.pending = True

    # -- checkpoints and commits --------------------------------------------------------------------

    def _checkpoint(self) -> None:
        """Close the current checkpoint; it is committed once all its outputs are acknowledged."""
        while len(self._inflight) >= self.spec.max_inflight and not self._stop.is_set():
            if self._give_up_at is not None and time.monotonic() >= self._give_up_at:
                break  # a revocation or a stop that cannot wait any longer
            self._wait_turn()  # backpressure: the broker or ClickHouse is behind
            self._settle()
        out = self._out
        self._close_sealing()  # the previous checkpoint's outputs go first, whole
        write = self.step.checkpoint(out)
        checkpoint = self._current
        if len(out):
            self._send(out, checkpoint)
        self._current = Checkpoint(self._failed, self.spec.track_produced)
        if write is not None:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.spec.name}-writer")
            checkpoint.write = self._pool.submit(write)
        if self.step.sealing:
            self._sealing = checkpoint
        else:
            self._inflight.close(checkpoint)
        self.runtime_stats.checkpoints += 1

    def _close_sealing(self) -> None:
        """Have the step emit the rest of the checkpoint it is writing; it then waits for its acks."""
        if self._sealing is None:
            return
        out = self._out
        self.step.finish_sealing(out)
        if len(out):
            self._send(out)
        self._inflight.close(self._sealing)
        self._sealing = None

    def _settle(self) -> None:
        """Deliver callbacks, produce failed records again (or stop), commit acknowledged checkpoints."""
        self.health.last_turn = time.monotonic()
        producer = self.producer
        if producer is not None:
            producer.poll(0)
        if self._outbox.failed and self._outbox.resend() and self._sender is not None:
            self._sender.pending = True
        settled, writes = self._inflight.settle()
        if settled:
            self._outbox.acknowledged()
            if self.spec.track_produced is not None:
                for checkpoint in self._inflight.take_settled():
                    self.step.settled(checkpoint.produced)
        if writes:
            self._resume()  # a table write finished: read on
        if time.monotonic() >= self._next_commit:
            self._commit(asynchronous=True)
            self._next_commit = time.monotonic() + self.spec.commit_every_s

    def _commit(self, asynchronous: bool) -> None:
        consumer, done = self.consumer, self._inflight.take()
        owned = [TopicPartition(t, p, o + 1) for (t, p), o in done.items() if (t, p) in self._assigned]
        if consumer is None or not owned:
            return
        try:
            if asynchronous:
                consumer.commit(offsets=owned, asynchronous=True)
            else:
                consumer.commit(offsets=owned, asynchronous=False)
        except KafkaException as exc:
            # The outputs are acknowledged; a lost commit only means a replay, which dedup absorbs.
            self.runtime_stats.commits_failed += 1
            log.warning(
                "%s: offset commit failed (%s); those records will be read again", self.spec.name, exc
            )

    def _wait_turn(self) -> None:
        """One short wait for the broker or ClickHouse; keeps the group membership while paused."""
        consumer, producer = self.consumer, self.producer
        assert consumer is not None
        if not self._paused and self.step.stalled():
            consumer.pause(consumer.assignment())
            self._paused = self.health.paused = True
        if self._paused and not self._in_callback:
            msg = consumer.poll(_POLL_WHILE_PAUSED_S)
            if msg is not None:  # only from partitions assigned while paused
                self._deferred.append(msg)
            return
        writes = self._inflight.pending_writes()
        if writes:
            future_wait(writes, timeout=0.01)
        elif producer is not None:
            producer.poll(0.01)

    def _resume(self) -> None:
        if self._paused and self.consumer is not None:
            self.consumer.resume(self.consumer.assignment())
            self._paused = self.health.paused = False

    def _drain(self, deadline: float) -> bool:
        """Checkpoint everything the step holds and wait until it is acknowledged (or ``deadline``)."""
        self._give_up_at = deadline
        try:
            return self._drain_until(deadline)
        finally:
            self._give_up_at = None

    def _drain_until(self, deadline: float) -> bool:
        out = self._out
        self._close_sealing()
        self.step.flush(out)
        if len(out):
            self._send(out)
        if self._current.offsets or self._current.outstanding:
            self._checkpoint()
        self._close_sealing()
        while self._inflight or self._failed:
            if time.monotonic() >= deadline:
                return False
            if self.producer is not None:
                self.producer.flush(0.1)
            else:
                self._wait_turn()
            self._settle()
        self._commit(asynchronous=False)
        return True

    def _finish(self) -> None:
        """Stopping: write and commit everything read so far, giving up after a grace period."""
        # Within the worker's stop bound: table writes give up first, then waiting for acknowledgements.
        bound = self.settings.worker_stop_timeout_s
        grace = threading.Timer(bound * 0.6, self.abandon.set)
        grace.daemon = True
        grace.start()
        try:
            if not self._drain(time.monotonic() + bound * 0.8):
                log.error(
                    "%s: stopping with %d checkpoints not acknowledged; their offsets were not committed, "
                    "so those records are read again on the next start",
                    self.spec.name,
                    len(self._inflight),
                )
        except Exception as exc:  # a write that gave up: nothing of it is committed
            log.error(
                "%s: stopping with records not written (%s); they are read again on the next start",
                self.spec.name,
                exc,
            )
        finally:
            grace.cancel()

    # -- transactional turns (the link writer) ------------------------------------------------------

    def _transaction(self, records: list[Message]) -> None:
        producer, consumer, out = self.producer, self.consumer, self._out
        assert producer is not None and consumer is not None
        offsets, self._current = self._current.offsets, Checkpoint(self._failed, self.spec.track_produced)
        try:
            producer.begin_transaction()
            self.step.process(records, out)
            self._send(out)
            producer.commit_transaction(_TIMEOUT_S)
        except KafkaException as exc:
            out.clear()
            self._failed_transaction(exc)
            return
        self._current = Checkpoint(self._failed, self.spec.track_produced)
        owned = [TopicPartition(t, p, o + 1) for (t, p), o in offsets.items() if (t, p) in self._assigned]
        if owned:
            consumer.commit(offsets=owned, asynchronous=False)
        self.runtime_stats.checkpoints += 1

    def _failed_transaction(self, exc: KafkaException) -> None:
        """Its records may be visible but its offsets are not committed: claim the log again."""
        error: KafkaError = exc.args[0] if exc.args else KafkaError(KafkaError._FAIL)
        log.warning("%s: transaction failed (%s); recovering from the published state", self.spec.name, error)
        producer, consumer = self.producer, self.consumer
        assert consumer is not None
        if producer is not None and error.txn_requires_abort():
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(_TIMEOUT_S)
        self.step.failed_transaction()
        self._stop.wait(self.settings.kafka_session_timeout_ms / 1000)
        consumer.poll(0)  # lets a pending revoke run before the log is claimed again
        assigned = [tp for tp in consumer.assignment() if tp.topic in self.spec.topics]
        if assigned and not self._stop.is_set():
            starts = self._claim([(tp.topic, tp.partition) for tp in assigned])
            for (topic, partition), offset in starts.items():
                consumer.seek(TopicPartition(topic, partition, offset))

    def _handover_s(self) -> float:
        """How long a transactional stage waits between being assigned and fencing earlier owners.

        An earlier owner that is alive learns of the rebalance at its next heartbeat (every third of
        the session timeout) and stops after the transaction it is in. Fencing a producer while its
        produce requests are in flight can leave, on Tansu, the last stable offset of the partitions
        its transaction wrote stuck: ``read_committed`` readers then stop there without an error
        (docs/identity.md). Apache Kafka needs no wait (``kafka_handover_ms`` 0).
        """
        return self.settings.kafka_handover_ms / 1000

    def _new_transactional_producer(self) -> None:
        """Fence every earlier owner of the transactional id (it aborts what they had open)."""
        old, self.producer = self.producer, None
        if old is not None:
            old.flush(5)
        producer = Producer(producer_config(self.settings, f"omniseg-{self.spec.name}", **self.spec.producer))
        producer.init_transactions(_TIMEOUT_S)
        self.producer = producer

    def _claim(self, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Take ``partitions`` over: a transactional stage waits out the hand-over and fences earlier
        owners first; the step restores their state and may say where to start reading. Claims nothing
        if the stage is stopped meanwhile."""
        if self.spec.transactional:
            if self._stop.wait(self._handover_s()):
                return {}
            self._new_transactional_producer()
        claim = _Claim(self.consumer)
        self.step.assigned(partitions, claim)
        return claim.starts

    # -- health -------------------------------------------------------------------------------------

    def _measure_lag(self, consumer: Consumer, now: float) -> None:
        """Records waiting on the assigned partitions (caught up counts as progress); without
        partitions, every few seconds, the group's."""
        self._next_lag = now + _LAG_EVERY_S
        health = self.health
        assignment = consumer.assignment()
        if not assignment:
            health.lag = None
            if now >= self._next_group_lag:
                self._next_group_lag = now + _GROUP_LAG_EVERY_S
                self._measure_group_lag(consumer, now)
            return
        health.group_lag = None
        lag, known = 0, False
        try:
            for tp in consumer.position(assignment):
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
                if high >= 0 and tp.offset >= 0:
                    lag += max(0, high - tp.offset)
                    known = True
        except KafkaException:
            return
        if known:
            health.lag = lag
            if lag == 0:
                health.last_progress = now

    def _measure_group_lag(self, consumer: Consumer, now: float) -> None:
        health = self.health
        try:
            metadata = consumer.list_topics(timeout=5)
            partitions = [
                TopicPartition(topic, partition)
                for topic in self.spec.topics
                if topic in metadata.topics
                for partition in metadata.topics[topic].partitions
            ]
            committed = consumer.committed(partitions, timeout=5) if partitions else []
            lag = position_sum = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
                start = tp.offset if tp.offset >= 0 else low
                lag += max(0, high - start)
                position_sum += start
        except KafkaException as exc:
            log.debug("%s: group lag not measured: %s", self.spec.name, exc)
            return
        if position_sum != self._group_committed:
            self._group_committed = position_sum
            health.group_progress_at = now
        health.group_lag = lag

    # -- rebalance ----------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        self.health.assigned = len(self._assigned)
        if self._paused:
            consumer.pause(partitions)
        self.health.claiming = True
        try:
            starts = self._claim([(tp.topic, tp.partition) for tp in partitions])
        finally:
            self.health.claiming = False
            self.health.last_progress = self.health.last_turn = time.monotonic()
        if starts:
            for tp in partitions:
                if (tp.topic, tp.partition) in starts:
                    tp.offset = starts[(tp.topic, tp.partition)]
            consumer.assign(partitions)
        log.info("%s: assigned %d partitions", self.spec.name, len(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if not partitions:
            return
        gone = [(tp.topic, tp.partition) for tp in partitions]
        if self.spec.transactional:
            self.step.revoked(gone)
            old, self.producer = self.producer, None
            if old is not None:
                old.flush(5)
        else:
            # Write and commit what was read from these partitions before another worker takes them.
            # If that cannot finish in time (ClickHouse down), the new owner re-reads them and the
            # idempotent outputs absorb the duplicates.
            self._in_callback = True
            try:
                if not self._drain(time.monotonic() + _REVOKE_WAIT_S):
                    log.warning(
                        "%s: partitions revoked before their outputs were acknowledged", self.spec.name
                    )
            except Exception as exc:
                log.warning("%s: partitions revoked before their rows were written: %s", self.spec.name, exc)
            finally:
                self._in_callback = False
            self.step.revoked(gone)
        self._assigned.difference_update(gone)
        self.health.assigned = len(self._assigned)
