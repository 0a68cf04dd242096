"""A transactional stage's claim (streams/kafka/runtime.py): it fences earlier owners only after the
hand-over wait, so that a live earlier owner has finished the transaction it was in."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from streams.kafka import runtime
from streams.kafka.runtime import StageRuntime
from streams.kafka.stage import Claim, StageSpec, Step
from streams.settings import Settings

SETTINGS = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", kafka_handover_ms=1000)
SPEC = StageSpec(
    name="writer",
    group="writer-group",
    topics=["t.log"],
    batch_size=10,
    producer={"transactional.id": "writer-txn"},
    paced=False,
    transactional=True,
)


class FakeProducer:
    fenced_at: list[float] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def init_transactions(self, timeout: float) -> None:
        FakeProducer.fenced_at.append(time.monotonic())

    def flush(self, timeout: float) -> int:
        return 0


class ClaimingStep(Step):
    def __init__(self) -> None:
        self.claimed: list[tuple[str, int]] = []

    def assigned(self, partitions: list[tuple[str, int]], claim: Claim) -> None:
        self.claimed += partitions
        claim.seek("t.log", 0, 42)


@pytest.fixture(autouse=True)
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeProducer.fenced_at = []
    monkeypatch.setattr(runtime, "Producer", FakeProducer)


def test_a_transactional_claim_fences_only_after_the_handover_wait() -> None:
    step = ClaimingStep()
    stage = StageRuntime(SETTINGS, SPEC, step)
    started = time.monotonic()
    starts = stage._claim([("t.log", 0)])

    assert len(FakeProducer.fenced_at) == 1
    assert FakeProducer.fenced_at[0] - started >= SETTINGS.kafka_handover_ms / 1000
    assert step.claimed == [("t.log", 0)]
    assert starts == {("t.log", 0): 42}
    assert isinstance(stage.producer, FakeProducer)


def test_a_stage_stopped_while_it_waits_to_fence_claims_nothing() -> None:
    step = ClaimingStep()
    stage = StageRuntime(SETTINGS, SPEC, step)
    threading.Timer(0.1, stage.stop).start()
    started = time.monotonic()
    starts = stage._claim([("t.log", 0)])

    assert time.monotonic() - started < SETTINGS.kafka_handover_ms / 1000
    assert starts == {}
    assert FakeProducer.fenced_at == [] and step.claimed == []
    assert stage.producer is None
