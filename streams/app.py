"""The Faust application: one per worker process, built from the settings by :func:`create_app`.

It hosts the history sink (:mod:`streams.sinks.events`) as a Faust service; other agents register
on the same app. Local defaults suit Tansu: short session timeouts (a group join waits about half of
it), no web server unless a port is given (two workers on one host must not clash), and Faust's own
loggers at WARNING so the hot path stays quiet.
"""

from __future__ import annotations

import logging

import faust

from streams.kafka.hosting import Loop, ThreadedLoops
from streams.settings import Settings
from streams.sinks.events import HistorySink

log = logging.getLogger("streams.app")


class HistorySinkService(ThreadedLoops):
    """Runs :class:`HistorySink` in a thread for the lifetime of the Faust worker."""

    def make_loops(self) -> list[tuple[str, Loop]]:
        return [("history-sink", HistorySink(self.settings))]


def create_app(
    settings: Settings,
    *,
    web_port: int | None = None,
    history_sink: bool | None = None,
    identity: bool | None = None,
    segments: bool | None = None,
) -> faust.App:
    """The worker's Faust app for these settings.

    The app id is ``<sink_group>.app``: the sink's own confluent-kafka consumer group is
    ``sink_group`` itself, and the two must differ (Faust joins its group with its own assignor
    protocol, which a plain consumer in the same group would conflict with).
    """
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
    )
    if settings.sink_enabled if history_sink is None else history_sink:
        service = HistorySinkService.bound(settings)
        app.service(service)
        # The identity tables (migration 0003) are filled by their own sink, with its own group.
        from streams.sinks.identity import identity_sink_service_for

        app.service(identity_sink_service_for(settings))
        # Segment membership history, definitions and products (migrations 0005-0006).
        from streams.sinks.segments import SegmentsSinkService

        app.service(SegmentsSinkService.bound(settings))
    if settings.identity_enabled if identity is None else identity:
        # Identity resolver + link writer (streams/stages/identity/resolver*.py), OMNISEG_IDENTITY_ENABLED.
        from streams.stages.identity.service import identity_service_for

        app.service(identity_service_for(settings))
    if settings.segments_enabled if segments is None else segments:
        # Profiles and segment membership (streams/stages/segments/stage.py), OMNISEG_SEGMENTS_ENABLED.
        from streams.stages.segments.stage import SegmentStageService

        app.service(SegmentStageService.bound(settings))
    return app
