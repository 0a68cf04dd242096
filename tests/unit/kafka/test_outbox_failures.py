"""Which delivery failures make a stage start again with new clients (streams/kafka/outbox.py)."""

from __future__ import annotations

import threading

import pytest
from confluent_kafka import KafkaError

from streams.kafka.checkpoints import Checkpoint
from streams.kafka.errors import StageFailed, needs_new_producer
from streams.kafka.outbox import TIMED_OUT_ROUNDS, Outbox


def outbox_with(*errors: KafkaError) -> Outbox:
    outbox = Outbox("stage", "events.invalid", retry=True, stop=threading.Event())
    checkpoint = Checkpoint(outbox.failed)
    outbox.failed.extend((checkpoint, None, err) for err in errors)
    return outbox


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
    ],
)
def test_a_producer_state_error_fails_the_stage_at_once(code: int) -> None:
    assert needs_new_producer(KafkaError(code))
    with pytest.raises(StageFailed, match="cannot deliver again"):
        outbox_with(KafkaError(KafkaError.NOT_ENOUGH_REPLICAS), KafkaError(code)).resend()


def test_a_fatal_error_needs_a_new_producer() -> None:
    assert needs_new_producer(KafkaError(KafkaError._FAIL, fatal=True))
    assert not needs_new_producer(KafkaError(KafkaError.NOT_ENOUGH_REPLICAS))


def test_timeouts_fail_the_stage_only_after_rounds_in_a_row() -> None:
    outbox = outbox_with()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    for _ in range(TIMED_OUT_ROUNDS - 1):
        outbox.failed.append((Checkpoint(outbox.failed), None, timed_out))
        with pytest.raises(AssertionError):  # produced again: the test outbox has no producer
            outbox.resend()
    outbox.failed.append((Checkpoint(outbox.failed), None, timed_out))
    with pytest.raises(StageFailed, match="rounds of records not acknowledged"):
        outbox.resend()


def test_an_acknowledged_checkpoint_resets_the_timeout_rounds() -> None:
    outbox = outbox_with()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    for _ in range(TIMED_OUT_ROUNDS + 2):
        outbox.failed.append((Checkpoint(outbox.failed), None, timed_out))
        with pytest.raises(AssertionError):
            outbox.resend()
        outbox.acknowledged()
