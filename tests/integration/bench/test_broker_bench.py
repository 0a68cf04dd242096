"""`omniseg bench broker` against the real Tansu broker: it reports one row per step, with the batches
the partition held and the broker's CPU per produce + fetch round trip read from /proc."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient

from streams.bench.broker import run_broker_bench
from tests import conftest

pytestmark = pytest.mark.integration


def test_broker_bench_reports_each_step_and_deletes_its_topic(stack: conftest.TestStack) -> None:
    settings = stack.settings()
    lines: list[str] = []
    pid = stack.kafka_proc.pid()
    assert pid is not None
    result = run_broker_bench(settings, steps=2, step=100, rounds=5, report=lines.append, broker_pid=pid)
    rows = result["steps"]
    assert [row["batches_in_partition"] for row in rows] == [105, 210]
    assert all(row["broker_cpu_ms_per_round_trip"] >= 0 and row["round_trip_ms_p50"] > 0 for row in rows)
    assert len(lines) == 2 and "batches in the partition" in lines[0]
    topics = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith("bench-broker-")]


def test_broker_bench_needs_a_broker_it_can_measure(stack: conftest.TestStack) -> None:
    settings = stack.settings(kafka_bootstrap="127.0.0.1:1")  # not the local stack's broker
    with pytest.raises(RuntimeError, match="omniseg dev up"):
        run_broker_bench(settings, steps=1, step=100, rounds=5, report=lambda _line: None)
