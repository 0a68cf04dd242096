"""The Faust application: one per worker process, built from the settings by :func:`create_app`.

Every stage (sinks, identity resolver and link writer, segment stage, audience writer) runs as a Faust service
(:class:`streams.kafka.hosting.StageService`) of the same app, as the settings enable them. Local
defaults suit Tansu: short session timeouts (a group join waits about half of it), no web server
unless a port is given (two workers on one host must not clash), and Faust's own loggers at WARNING
so the hot path stays quiet.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

import faust
from mode import Service

from streams.kafka.hosting import StageBoard, StageFactory, StageService
from streams.settings import Settings

log = logging.getLogger("streams.app")


def create_app(
    settings: Settings,
    *,
    web_port: int | None = None,
    history_sink: bool | None = None,
    identity: bool | None = None,
    segments: bool | None = None,
    audiences: bool | None = None,
) -> faust.App:
    """The worker's Faust app for these settings.

    The app id is ``<sink_group>.app``: the sink's own confluent-kafka consumer group is
    ``sink_group`` itself, and the two must differ (Faust joins its group with its own assignor
    protocol, which a plain consumer in the same group would conflict with).
    """
    faust_dir = Path(tempfile.gettempdir()) / "omniseg-faust"
    faust_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.sink_group}.app",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.kafka_partitions,
        topic_replication_factor=settings.kafka_replication,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(0.5, settings.kafka_session_timeout_ms / 3000),
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_host="127.0.0.1",
        producer_acks=-1,
        # Faust keeps nothing there (memory store), but makes the directory: keep it out of the
        # directory the worker was started in.
        datadir=str(faust_dir / "{conf.name}-data"),
    )
    stages: list[tuple[str, StageFactory]] = []
    sinks = settings.sink_enabled if history_sink is None else history_sink
    if sinks:
        from streams.sinks.audiences import AudiencesSink
        from streams.sinks.events import HistorySink
        from streams.sinks.identity import IdentitySink
        from streams.sinks.segments import SegmentsSink

        # events / invalid_events, the identity tables (0003), the segment tables (0005-0006) and the
        # audience tables (0009).
        stages += [
            ("history-sink", HistorySink),
            ("identity-sink", IdentitySink),
            ("segments-sink", SegmentsSink),
            ("audiences-sink", AudiencesSink),
        ]
    if settings.identity_enabled if identity is None else identity:
        from streams.stages.identity.link_writer import LinkWriter
        from streams.stages.identity.resolver import Resolver

        stages += [("identity-resolver", Resolver), ("identity-link-writer", LinkWriter)]
    if settings.segments_enabled if segments is None else segments:
        from streams.stages.segments.stage import SegmentStage

        stages += [("segments", SegmentStage)]
    if settings.audiences_enabled if audiences is None else audiences:
        from streams.stages.audiences.writer import AudienceWriter

        stages += [("audiences", AudienceWriter)]
    board = StageBoard()
    for name, factory in stages:
        app.service(StageService.for_stage(settings, name, factory, board))
    if settings.worker_metrics_port is not None:
        app.service(_metrics_service(settings, board))
    if settings.events_retention_days > 0 and sinks:  # the workers that write the raw tables
        app.service(_retention_service(settings))
    return app


# The first retention run waits this long after the worker starts, so a restart loop does not start
# a fold or a delete each time; then it runs every events_retention_interval_h.
RETENTION_FIRST_RUN_S = 300.0
# After a failed run (ClickHouse down, a fold that timed out), the next try comes this much sooner.
RETENTION_RETRY_S = 900.0


def _retention_service(settings: Settings, first_run_s: float = RETENTION_FIRST_RUN_S) -> type[Service]:
    """Runs the raw-event retention (streams/warehouse/retention.py) on a schedule in the worker.

    Every worker with the history sink hosts it: a run that finds nothing to do changes nothing, and a
    fold or a delete run twice gives the same result, so several workers need no coordination."""
    from streams.warehouse.retention import run_scheduled

    interval_s = settings.events_retention_interval_h * 3600

    class RetentionSchedule(Service):
        """Folds the days past the retention, then deletes them (18.16) or keeps the TTL set."""

        @Service.task
        async def _schedule(self) -> None:
            await self.sleep(first_run_s)
            while not self.should_stop:
                wait_s = interval_s
                try:
                    outcome = await asyncio.to_thread(run_scheduled, settings, log.info)
                    if outcome is not None:
                        log.info("retention: rollups hold every day before %s", outcome.boundary)
                except Exception as exc:  # the worker's stages go on; the next run tries again
                    log.warning("retention run failed (next try in %.0f s): %s", RETENTION_RETRY_S, exc)
                    wait_s = min(interval_s, RETENTION_RETRY_S)
                await self.sleep(wait_s)

    return RetentionSchedule


def _metrics_service(settings: Settings, board: StageBoard) -> type[Service]:
    from streams.kafka.metrics import MetricsServer

    port: int = settings.worker_metrics_port or 0

    class WorkerMetrics(Service):
        """``/metrics``, ``/health`` and ``/ready`` of this worker's stages."""

        server: MetricsServer | None = None

        async def on_start(self) -> None:
            try:
                self.server = MetricsServer(board.reports, settings.worker_metrics_host, port)
            except OSError as exc:
                where = f"{settings.worker_metrics_host}:{port}"
                raise RuntimeError(
                    f"worker metrics: cannot listen on {where}: {exc.strerror}; "
                    "set OMNISEG_WORKER_METRICS_PORT to a free port"
                ) from None
            self.server.start()

        async def on_stop(self) -> None:
            if self.server is not None:
                self.server.stop()

    return WorkerMetrics
