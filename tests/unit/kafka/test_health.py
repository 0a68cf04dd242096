"""The rules that judge a stage from its readings (streams/kafka/health.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.kafka.health import StageHealth, Status, assess

STALL = 10.0


def running(**readings: object) -> StageHealth:
    health = StageHealth(started_at=0.0, last_turn=100.0, last_progress=100.0, group_progress_at=0.0)
    health.assigned, health.step_ready, health.lag = 4, True, 0
    for name, value in readings.items():
        setattr(health, name, value)
    return health


def test_caught_up_is_idle_and_lag_with_progress_is_running() -> None:
    assert assess(running(), 100.5, STALL).status is Status.IDLE
    assert assess(running(lag=50), 105.0, STALL).status is Status.RUNNING


def test_lag_without_progress_for_the_stall_limit_is_stalled_and_asks_for_a_restart() -> None:
    verdict = assess(running(lag=50, last_turn=111.0), 111.0, STALL)
    assert verdict.status is Status.STALLED and verdict.needs_restart
    assert "50 records waiting" in verdict.reason


def test_a_loop_that_does_not_turn_is_stuck_and_hopeless() -> None:
    verdict = assess(running(last_turn=80.0), 100.0, STALL)
    assert verdict.status is Status.STUCK and verdict.hopeless and not verdict.needs_restart


def test_rebuilding_state_in_a_rebalance_is_never_stuck_or_stalled() -> None:
    health = running(lag=50, last_turn=50.0, last_progress=50.0, claiming=True)
    assert assess(health, 100.0, STALL).status is Status.RESTORING


def test_paused_for_clickhouse_waits_and_is_not_restarted() -> None:
    verdict = assess(running(lag=50, last_progress=50.0, paused=True), 100.0, STALL)
    assert verdict.status is Status.WAITING_FOR_CLICKHOUSE and not verdict.needs_restart


def test_no_partitions_while_the_group_stands_still_with_records_waiting_is_stalled() -> None:
    health = running(assigned=0, lag=None, group_lag=30, group_progress_at=85.0)
    assert assess(health, 100.0, STALL).status is Status.STALLED
    # the group moved recently (another member works), or nothing waits: not this stage's problem
    assert (
        assess(running(assigned=0, group_lag=30, group_progress_at=95.0), 100.0, STALL).status is Status.IDLE
    )
    assert assess(running(assigned=0, group_lag=0), 100.0, STALL).status is Status.IDLE


def test_without_partitions_the_limit_is_at_least_one_group_join() -> None:
    # Past the stall limit but within a join: a restart would only start the join again.
    health = running(assigned=0, lag=None, group_lag=30, started_at=88.0, group_progress_at=85.0)
    assert assess(health, 100.0, STALL, join_s=14.0).status is Status.STARTING
    assert assess(health, 103.0, STALL, join_s=14.0).status is Status.STALLED
    # With partitions, the stall limit alone counts.
    busy = running(lag=50, last_progress=88.0)
    assert assess(busy, 100.0, STALL, join_s=14.0).status is Status.STALLED


def test_a_new_stage_without_partitions_is_starting_for_one_stall_limit() -> None:
    health = running(assigned=0, lag=None, group_lag=30, started_at=95.0, group_progress_at=0.0)
    assert assess(health, 100.0, STALL).status is Status.STARTING


@given(
    lag=st.integers(0, 10**6),
    since_progress=st.floats(0, 1000),
    since_turn=st.floats(0, 1000),
    paused=st.booleans(),
    claiming=st.booleans(),
)
def test_a_restart_is_asked_only_for_waiting_records_without_progress(
    lag: int, since_progress: float, since_turn: float, paused: bool, claiming: bool
) -> None:
    now = 2000.0
    health = running(
        lag=lag,
        last_progress=now - since_progress,
        last_turn=now - since_turn,
        paused=paused,
        claiming=claiming,
    )
    verdict = assess(health, now, STALL)
    expected = not paused and not claiming and lag > 0 and since_progress > STALL and since_turn <= STALL
    assert verdict.needs_restart == expected
