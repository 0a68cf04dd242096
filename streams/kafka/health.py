"""What a stage reports about itself, and the judgement of whether it is healthy.

The stage thread writes a :class:`StageHealth` (plain assignments, read from any thread); the worker's
supervisor reads it every second and calls :func:`assess`, a pure function of the readings and the
clock. The rules:

- **starting**: not yet assigned partitions and not yet past one stall limit (or one group join,
  ``join_s``, if that is longer).
- **restoring**: assigned partitions whose state the step is still rebuilding (never judged stalled).
- **waiting for ClickHouse**: the partitions are paused while a table write is retried; that is
  ClickHouse's fault, the stage recovers by itself when it answers.
- **stalled**: records are waiting (lag) but none was handled for ``stall_s``; or the stage has no
  partitions while its group's committed offsets stood still for ``stall_s`` with records waiting (the
  group lost its partitions). A stalled stage rejoins its group (the supervisor restarts it). Without
  partitions the limit is at least ``join_s``, the longest a group join can take: a member that left
  without saying so (a restart while the broker was away) holds the join up until its session times
  out, and restarting sooner would only start the join again.
- **stuck**: the loop has not turned for ``stall_s`` (blocked in a call that does not return). A thread
  cannot be interrupted, so the worker exits and its orchestrator starts it again.
- **running** otherwise (``idle`` when nothing is waiting).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    STARTING = "starting"
    RESTORING = "restoring"
    RUNNING = "running"
    IDLE = "idle"
    WAITING_FOR_CLICKHOUSE = "waiting_for_clickhouse"
    STALLED = "stalled"
    STUCK = "stuck"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass
class StageHealth:
    """Readings of one stage run (a restart starts a new one). Times are ``time.monotonic()``."""

    started_at: float = field(default_factory=time.monotonic)
    last_turn: float = field(default_factory=time.monotonic)  # the loop went round
    last_progress: float = field(default_factory=time.monotonic)  # records handled or state rebuilt
    assigned: int = 0
    step_ready: bool = False
    paused: bool = False  # partitions paused while ClickHouse is retried
    claiming: bool = False  # in a rebalance callback rebuilding state (may take long)
    lag: int | None = None  # records waiting on the assigned partitions (None: not known yet)
    group_lag: int | None = None  # without partitions: records waiting for the whole group
    group_progress_at: float = field(default_factory=time.monotonic)  # its committed offsets moved


@dataclass(frozen=True)
class Assessment:
    status: Status
    reason: str = ""

    @property
    def needs_restart(self) -> bool:
        return self.status is Status.STALLED

    @property
    def hopeless(self) -> bool:
        return self.status is Status.STUCK


def assess(health: StageHealth, now: float, stall_s: float, join_s: float = 0.0) -> Assessment:
    """The stage's status by the rules of this module."""
    if not health.claiming and now - health.last_turn > stall_s:
        return Assessment(Status.STUCK, f"its loop has not turned for {now - health.last_turn:.0f}s")
    if health.assigned == 0:
        waiting = health.group_lag or 0
        limit = max(stall_s, join_s)
        if waiting > 0 and now - health.started_at > limit and now - health.group_progress_at > limit:
            return Assessment(
                Status.STALLED,
                f"no partitions assigned and {waiting} records waiting for its group, whose offsets "
                f"have not moved for {now - health.group_progress_at:.0f}s",
            )
        return Assessment(Status.STARTING if now - health.started_at <= limit else Status.IDLE)
    if health.claiming or not health.step_ready:
        return Assessment(Status.RESTORING)
    if health.paused:
        return Assessment(Status.WAITING_FOR_CLICKHOUSE, "a table write is being retried")
    lag = health.lag or 0
    if lag > 0 and now - health.last_progress > stall_s:
        return Assessment(
            Status.STALLED,
            f"{lag} records waiting and none handled for {now - health.last_progress:.0f}s",
        )
    return Assessment(Status.RUNNING if lag > 0 else Status.IDLE)
