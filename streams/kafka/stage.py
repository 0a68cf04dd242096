"""What a stage is: a declaration (:class:`StageSpec`) and a step (:class:`Step`).

The runtime (:mod:`streams.kafka.runtime`) does every Kafka call. A step never touches a client: it gets
the records of a batch, changes its own state, and appends what it wants sent to an :class:`Outputs`
(records for Kafka topics, inputs it refuses with their reason). So a step is a
``(state, records) -> (state, outputs)`` function that tests drive with plain objects, without a broker.

A record is anything with confluent-kafka's ``Message`` accessors (``topic()``, ``partition()``,
``offset()``, ``key()``, ``value()``, ``headers()``); the runtime hands over the client's own
messages, tests hand over :class:`Record`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# (topic, key, value) sent with the producer's partitioner (murmur2 of the key).
Send = tuple[str, bytes | None, bytes | None]
# (topic, key, value, partition, headers) sent to an explicit partition.
Placed = tuple[str, bytes | None, bytes | None, int, list[tuple[str, str | bytes | None]] | None]


class RecordLike(Protocol):
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...


class Record:
    """A consumed record without a broker (tests, replays): the accessors of ``confluent_kafka.Message``."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        partition: int = 0,
        offset: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic, self._value, self._key = topic, value, key
        self._partition, self._offset, self._headers = partition, offset, headers or []

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def error(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Refused:
    """An input a step cannot use: it goes to ``events.invalid`` with the reason, never lost."""

    source: str  # the topic it was read from
    partition: int
    offset: int
    original: bytes
    reason: str
    field: str | None = None


class Outputs:
    """What a step hands back: records to send and inputs it refused.

    ``sealing`` holds records that belong to the checkpoint being written over several turns (see
    :attr:`Step.sealing`); everything else belongs to the current one.
    """

    __slots__ = ("placed", "refused", "sealing", "sends")

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.placed: list[Placed] = []
        self.refused: list[Refused] = []
        self.sealing: list[Send] = []

    def __len__(self) -> int:
        return len(self.sends) + len(self.placed) + len(self.refused) + len(self.sealing)

    def clear(self) -> None:
        self.sends.clear()
        self.placed.clear()
        self.refused.clear()
        self.sealing.clear()


# A table write a step returns at a checkpoint; the runtime runs it in its writer thread.
TableWrite = Callable[[], None]


@dataclass(frozen=True)
class StageSpec:
    """The declaration of a stage: its name, group, topics and how its runtime behaves."""

    name: str  # InvalidRecord.stage, the client ids, the thread, the logs
    group: str
    topics: Sequence[str]
    batch_size: int
    # Extra librdkafka settings of the stage's consumer and producer (streams.kafka.config).
    consumer: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    # The stage's producer lingers and a Sender sends once the input is drained (a Kafka -> Kafka stage).
    paced: bool = True
    # How long a turn waits for records when nothing has arrived.
    wait_s: float = 0.02
    # While the step is gathering (``Step.gathering``), a turn reads until it has ``batch_size``
    # records or its wait is over (a sink filling a batch), instead of taking whatever has arrived
    # (a stage passing records on as soon as it can).
    gather: bool = False
    # Checkpoints whose outputs are not all acknowledged before the loop waits for the broker.
    max_inflight: int = 32
    # Offsets of acknowledged checkpoints are committed at most this often (a lost commit is a replay).
    commit_every_s: float = 0.0
    # A record the broker did not take: produce it again after a backoff (at-least-once stages whose
    # outputs are idempotent downstream), or stop the worker so a restart replays (False).
    retry_failed_sends: bool = True
    # Each turn's outputs are one Kafka transaction, followed by a synchronous offset commit.
    transactional: bool = False
    # Young-generation GC threshold for the stage's process (docs/decisions/0005-gc-and-long-lived-state.md).
    gc_young_threshold: int = 10_000
    # A topic whose records' offsets each checkpoint notes; the step hears of them once the checkpoint
    # is acknowledged (``Step.settled``): a local store written only then never runs ahead of its
    # changelog.
    track_produced: str | None = None


def transactional_spec(
    name: str, group: str, topic: str, batch_size: int, transactional_id: str
) -> StageSpec:
    """A stage that owns a log: reads ``topic`` and puts each turn's outputs in one Kafka transaction
    (``transactional_id`` fences a previous owner), then commits its offsets."""
    return StageSpec(
        name=name,
        group=group,
        topics=[topic],
        batch_size=batch_size,
        producer={"transactional.id": transactional_id},
        paced=False,
        wait_s=0.02,
        transactional=True,
    )


class Claim(Protocol):
    """What a step may ask about partitions it is given, and where it may have them read from."""

    def committed(self, topic: str, partition: int) -> int:
        """The group's committed offset (0 when none)."""
        ...

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Start reading this partition at ``offset``."""
        ...


class Step:
    """A stage's logic between the runtime's Kafka calls. Subclasses override what they need."""

    # While True, a checkpoint is still writing its outputs (``Outputs.sealing``) over several turns.
    sealing: bool = False

    def start(self) -> None:
        """Load what the step needs before the first record (replicas, definitions)."""

    def ready(self) -> bool:
        """Whether the step may be given records now (e.g. it owns its log and rebuilt its state)."""
        return True

    def before_turn(self, out: Outputs) -> None:
        """Before each batch: follow replicas and definitions (may emit outputs)."""

    def process(self, records: list[Any], out: Outputs) -> None:
        """The step proper: apply ``records`` to the state, append outputs to ``out``."""
        raise NotImplementedError

    def wait_s(self, longest: float) -> float:
        """How long an idle turn may wait for records (``longest`` at most)."""
        return longest

    def gathering(self) -> bool:
        """Whether a batch is being filled: a gathering stage (``StageSpec.gather``) then reads until
        the batch is full or :meth:`wait_s` is over; otherwise a turn takes whatever has arrived, so
        that a batch's interval starts with its first record, not with an idle wait before it."""
        return False

    def after_turn(self, handled: int, out: Outputs) -> None:
        """After each batch (``handled`` records, maybe none): timers, slices of a checkpoint."""

    def checkpoint_due(self, handled: int) -> bool:
        """Whether the outputs so far should become a checkpoint (committed once acknowledged)."""
        return handled > 0

    def checkpoint(self, out: Outputs) -> TableWrite | None:
        """Close the current checkpoint: emit what it must still write; or return a table write."""
        return None

    def finish_sealing(self, out: Outputs) -> None:
        """Emit the rest of the checkpoint being written (``Outputs.sealing``) and stop sealing."""

    def flush(self, out: Outputs) -> None:
        """Before a stop or a revocation: emit every output the step is holding back."""

    def stalled(self) -> bool:
        """Whether a table write is being retried (the runtime then pauses its partitions)."""
        return False

    def assigned(self, partitions: list[tuple[str, int]], claim: Claim) -> None:
        """Partitions were assigned: restore their state (``claim`` tells where the group stands and
        where to start reading)."""

    def reached_end(self, topic: str, partition: int) -> None:
        """The consumer read ``partition`` of ``topic`` to its current end (reported only when the
        spec's consumer sets ``enable.partition.eof``; records before the end come in this turn or
        an earlier one, and :meth:`process` has them before the turn's checkpoint)."""

    def revoked(self, partitions: list[tuple[str, int]]) -> None:
        """Partitions were revoked after their checkpoint was committed: drop their state."""

    def settled(self, produced: dict[int, tuple[int, int]]) -> None:
        """The oldest checkpoint not yet settled is acknowledged, every output of it and of each earlier
        one (called in checkpoint order, once per :meth:`checkpoint` call, only when the spec sets
        ``track_produced``); ``produced``: per partition of that topic, the offset and timestamp of
        its last record in this checkpoint."""

    def failed_transaction(self) -> None:
        """A transactional turn failed: its outputs may be visible but its offsets are not committed."""

    def close(self) -> None:
        """Release what :meth:`start` opened."""
