"""Offsets are committed in order, and only once every output up to them is acknowledged (property
test of CheckpointQueue against a plain model: a list of closed checkpoints, committed as a prefix)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.checkpoints import Checkpoint, CheckpointQueue

# What a stage does: read a record of a partition, emit an output, close the checkpoint, get the
# delivery report of the n-th outstanding output, or settle and commit (every turn).
operations = st.lists(
    st.one_of(
        st.tuples(st.just("read"), st.integers(0, 2)),
        st.tuples(st.just("emit"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("settle"), st.just(0)),
    ),
    max_size=80,
)


@given(operations)
def test_offsets_are_committed_in_order_once_every_output_up_to_them_is_acknowledged(
    ops: list[tuple[str, int]],
) -> None:
    queue = CheckpointQueue()
    checkpoints = [Checkpoint([])]  # every checkpoint made; the last one is the current one
    closed = 0  # checkpoints[:closed] are closed
    next_offset = [0, 0, 0]
    # The model: per checkpoint, the offsets read and the outputs not yet acknowledged.
    read: list[dict[tuple[str, int], int]] = [{}]
    left: list[int] = [0]
    unacked: list[int] = []  # checkpoint index of each output not acknowledged yet
    committed: dict[tuple[str, int], int] = {}
    model_committed: dict[tuple[str, int], int] = {}
    model_next = 0  # checkpoints[:model_next] are committed in the model
    for op, arg in ops:
        current = checkpoints[-1]
        if op == "read":
            current.offsets[("t", arg)] = read[-1][("t", arg)] = next_offset[arg]
            next_offset[arg] += 1
        elif op == "emit":
            current.outstanding += 1
            left[-1] += 1
            unacked.append(len(checkpoints) - 1)
        elif op == "close":
            queue.close(current)
            closed += 1
            checkpoints.append(Checkpoint([]))
            read.append({})
            left.append(0)
        elif op == "ack" and unacked:
            index = unacked.pop(arg % len(unacked))
            checkpoints[index](None, None)  # the delivery report of one of its records
            left[index] -= 1
        elif op == "settle":
            queue.settle()
            committed.update(queue.take())
            while model_next < closed and left[model_next] == 0:
                model_committed.update(read[model_next])
                model_next += 1
        assert committed == model_committed
    # Never beyond an output still waiting: every committed offset was read by a committed checkpoint.
    for index in range(model_next, len(checkpoints)):
        for partition, offset in read[index].items():
            assert committed.get(partition, -1) < offset


def test_a_failed_table_write_keeps_its_offsets_uncommitted() -> None:
    queue = CheckpointQueue()
    checkpoint = Checkpoint([])
    checkpoint.offsets[("t", 0)] = 41
    failed: Future[None] = Future()
    failed.set_exception(RuntimeError("ClickHouse said no"))
    checkpoint.write = failed
    queue.close(checkpoint)
    with pytest.raises(RuntimeError, match="ClickHouse said no"):
        queue.settle()
    assert queue.take() == {}


def test_a_refused_record_stays_outstanding_until_produced_again() -> None:
    failed: list[tuple[Checkpoint, object, object]] = []
    checkpoint = Checkpoint(failed)
    checkpoint.outstanding = 1

    refusal = KafkaError(KafkaError.NOT_ENOUGH_REPLICAS)
    checkpoint(refusal, "the record")
    assert not checkpoint.done() and failed == [(checkpoint, "the record", refusal)]


class _Delivered:
    """A delivery report's message: where the record landed."""

    def __init__(self, topic: str, partition: int, offset: int, timestamp: int) -> None:
        self._where = (topic, partition, offset, timestamp)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]

    def timestamp(self) -> tuple[int, int]:
        return 1, self._where[3]


def test_a_tracked_topic_s_last_offsets_are_handed_over_per_settled_checkpoint_in_order() -> None:
    queue = CheckpointQueue()
    first, second = Checkpoint([], "state"), Checkpoint([], "state")
    first.outstanding, second.outstanding = 3, 4
    queue.close(first)
    queue.close(second)
    # Acknowledged out of order: the second checkpoint's records first; other topics are not noted.
    second(None, _Delivered("state", 0, 9, 900))
    second(None, _Delivered("changes", 0, 50, 950))
    second(None, _Delivered("state", 1, 4, 940))
    assert queue.settle() == (0, 0) and queue.take_settled() == []  # the first is still outstanding
    first(None, _Delivered("state", 0, 7, 700))
    first(None, _Delivered("state", 0, 5, 500))  # an earlier offset acknowledged later: not the last
    first(None, _Delivered("changes", 0, 40, 710))
    second(None, _Delivered("state", 1, 3, 930))
    assert queue.settle() == (2, 0)
    settled = queue.take_settled()
    assert [c.produced for c in settled] == [{0: (7, 700)}, {0: (9, 900), 1: (4, 940)}]
    assert queue.take_settled() == []
