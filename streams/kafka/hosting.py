"""Stages hosted by the Faust worker: each in its own thread, supervised, restarted when it fails.

Every stage is a blocking confluent-kafka loop (:mod:`streams.kafka.runtime`; why not per-event Faust
agents: docs/decisions/0004-one-stage-runtime-hosted-by-faust.md). A :class:`StageSupervisor` runs one
stage in a thread and keeps it going:

- a stage whose run raises (a producer that cannot deliver again, a commit refused with
  ``UNKNOWN_MEMBER_ID``, a Kafka fatal error) is built anew and started again after a backoff
  (``_BACKOFF_MIN_S`` doubling up to ``_BACKOFF_MAX_S``); the other stages of the worker go on;
- a stage judged stalled (:mod:`streams.kafka.health`) is asked to restart: it writes and commits what
  it holds, closes its consumer and joins its group again;
- a stage that failed more than ``stage_restart_max`` times within ``stage_restart_window_s``, or whose
  loop is stuck, ends the worker with a message naming the stage and the reason, so that its
  orchestrator starts a new one.

Stopping is bounded: every stage is asked to stop at once, and the worker waits at most
``worker_stop_timeout_s`` for all of them together.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mode import Service

from streams.kafka.health import Assessment, StageHealth, Status, assess
from streams.kafka.runtime import StageRuntime
from streams.settings import Settings

log = logging.getLogger("streams.kafka.hosting")

# The young-generation GC threshold the resolver and the sinks set for their shared process: a pass
# stops every thread of it and its length grows with the young objects, so the default makes batch
# building slow and a much higher one makes long pauses (docs/decisions/0005-gc-and-long-lived-state.md).
GC_YOUNG_THRESHOLD = 10_000

_BACKOFF_MIN_S = 1.0
_BACKOFF_MAX_S = 60.0
_WATCH_EVERY_S = 1.0

StageFactory = Callable[[Settings], StageRuntime]


@dataclass(frozen=True)
class StageReport:
    """What the metrics endpoint shows of one stage."""

    name: str
    status: Status
    reason: str
    assigned: int
    lag: int | None
    group_lag: int | None
    seconds_since_progress: float
    records: int
    sent: int
    refused: int
    restarts: int


class StageSupervisor:
    """Runs one stage in a thread, restarts it when it fails or stalls, gives up when it cannot recover."""

    def __init__(self, settings: Settings, name: str, factory: StageFactory) -> None:
        self.settings = settings
        self.name = name
        self.factory = factory
        self.restarts = 0
        self.failure: str | None = None  # set when the supervisor gave up; ends the worker
        self.stage: StageRuntime | None = None
        self._health = StageHealth()
        # The longest a group join can take: a member gone without leaving holds it up for a session
        # timeout, and the join itself waits up to another (streams/kafka/health.py).
        self._join_s = 2 * settings.kafka_session_timeout_ms / 1000 + 2.0
        self._assessment = Assessment(Status.STARTING)
        self._failures: deque[float] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        # Counters of the runs before the current one (a run's own counters start at zero).
        self._records = self._sent = self._refused = 0

    # -- lifecycle (any thread) ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stage = self.stage
        if stage is not None:
            stage.stop()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(max(0.0, timeout_s))
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    # -- the stage thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stage = self.factory(self.settings)
            except Exception as exc:
                reason = f"it could not be built: {_one_line(exc)}"
            else:
                self.stage, self._health = stage, stage.health
                if self._stop.is_set():
                    stage.stop()
                reason = self._run_once(stage)
            if self._stop.is_set():
                return
            if not self._failed(reason):
                return

    def _run_once(self, stage: StageRuntime) -> str:
        try:
            stage.run()
        except Exception as exc:
            log.exception("%s failed", self.name)
            reason = _one_line(exc)
        else:
            reason = (
                f"it was restarted because {stage.restart_reason}"
                if stage.restart_reason
                else "its loop returned without being asked to stop"
            )
        finally:
            stats = stage.runtime_stats
            self._records += stats.records
            self._sent += stats.sent
            self._refused += stats.refused
        return reason

    def _failed(self, reason: str) -> bool:
        """Count a failure; wait out the backoff. False when the stage is beyond recovery."""
        now = time.monotonic()
        window = self.settings.stage_restart_window_s
        failures = self._failures
        failures.append(now)
        while failures and now - failures[0] > window:
            failures.popleft()
        if len(failures) > self.settings.stage_restart_max:
            self.failure = (
                f"stage {self.name} failed {len(failures)} times within {window:.0f}s; last: {reason}"
            )
            self._assessment = Assessment(Status.FAILED, self.failure)
            log.error("%s", self.failure)
            return False
        delay = min(_BACKOFF_MIN_S * 2 ** (len(failures) - 1), _BACKOFF_MAX_S)
        self._assessment = Assessment(Status.RESTARTING, reason)
        log.error("stage %s stopped: %s; starting it again in %.0fs", self.name, reason, delay)
        self._stop.wait(delay)
        self.restarts += 1
        self._assessment = Assessment(Status.STARTING)
        return True

    # -- watching (the worker's event loop) ---------------------------------------------------------

    def check(self, now: float) -> Assessment:
        """Judge the current run; ask a stalled one to restart. Returns the assessment."""
        if self.failure is not None or self._assessment.status is Status.RESTARTING:
            return self._assessment
        stage = self.stage
        if stage is None or stage.health is not self._health or not self._thread.is_alive():
            return self._assessment  # between two runs
        assessment = assess(self._health, now, self.settings.stage_stall_s, self._join_s)
        if assessment.needs_restart and stage.restart_reason is None:
            log.error("stage %s is stalled (%s); it rejoins its group", self.name, assessment.reason)
            stage.restart(f"it was stalled: {assessment.reason}")
        self._assessment = assessment
        return assessment

    def report(self, now: float) -> StageReport:
        stage, health, assessment = self.stage, self._health, self._assessment
        stats = stage.runtime_stats if stage is not None else None
        return StageReport(
            name=self.name,
            status=assessment.status,
            reason=assessment.reason,
            assigned=health.assigned,
            lag=health.lag,
            group_lag=health.group_lag,
            seconds_since_progress=max(0.0, now - health.last_progress),
            records=self._records + (stats.records if stats else 0),
            sent=self._sent + (stats.sent if stats else 0),
            refused=self._refused + (stats.refused if stats else 0),
            restarts=self.restarts,
        )


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class StageBoard:
    """The supervisors of one worker process (what the metrics endpoint reads)."""

    def __init__(self) -> None:
        self.supervisors: list[StageSupervisor] = []
        self._stop_deadline: float | None = None

    def stop_all(self, timeout_s: float) -> float:
        """Ask every stage to stop (once: they drain side by side); returns the shared deadline."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + timeout_s
            for supervisor in self.supervisors:
                supervisor.stop()
        return self._stop_deadline

    def reports(self) -> list[StageReport]:
        now = time.monotonic()
        return [supervisor.report(now) for supervisor in self.supervisors]


class StageService(Service):
    """The Faust service of one stage: starts its supervisor, watches it, stops it within the bound."""

    settings: Settings
    name: str
    factory: StageFactory
    board: StageBoard

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage_supervisor = StageSupervisor(self.settings, self.name, self.factory)
        self.board.supervisors.append(self.stage_supervisor)

    @classmethod
    def for_stage(
        cls, settings: Settings, name: str, factory: StageFactory, board: StageBoard
    ) -> type[StageService]:
        """The service class to register with ``app.service``."""
        attrs = {"settings": settings, "name": name, "factory": staticmethod(factory), "board": board}
        return type(f"StageService[{name}]", (cls,), attrs)

    async def on_start(self) -> None:
        self.stage_supervisor.start()

    @Service.task
    async def _watch(self) -> None:
        supervisor = self.stage_supervisor
        while not self.should_stop:
            await asyncio.sleep(_WATCH_EVERY_S)
            assessment = supervisor.check(time.monotonic())
            if supervisor.failure is not None:
                await self.crash(RuntimeError(supervisor.failure))
                return
            if assessment.hopeless:
                message = f"stage {self.name} is stuck: {assessment.reason}; the worker stops"
                log.error("%s", message)
                await self.crash(RuntimeError(message))
                return

    async def on_stop(self) -> None:
        timeout_s = self.settings.worker_stop_timeout_s
        deadline = self.board.stop_all(timeout_s)
        if not await asyncio.to_thread(self.stage_supervisor.join, deadline - time.monotonic()):
            log.error("stage %s did not stop within %.0fs; leaving it", self.name, timeout_s)
