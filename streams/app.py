"""The Faust application: one per worker process, built from the settings by :func:`create_app`.

It hosts the history sink (:mod:`streams.agents.history`) as a Faust service; other agents register
on the same app. Local defaults suit Tansu: short session timeouts (a group join waits about half of
it), no web server unless a port is given (two workers on one host must not clash), and Faust's own
loggers at WARNING so the hot path stays quiet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import faust
from mode import Service

from streams.agents.history import HistorySink
from streams.settings import Settings

log = logging.getLogger("streams.app")

# Stopping waits for the sink to flush and commit; it gives up on ClickHouse after its own grace period.
_SINK_STOP_TIMEOUT_S = 30.0


class HistorySinkService(Service):
    """Runs :class:`HistorySink` in a thread for the lifetime of the Faust worker."""

    settings: Settings  # set on the subclass made by create_app

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sink = HistorySink(self.settings)
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    async def on_start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="history-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.sink.run()
        except BaseException as exc:
            self._failure = exc
            log.exception("history sink crashed: %s", exc)

    @Service.task
    async def _watch(self) -> None:
        # A dead sink thread must not leave a worker that looks healthy but writes nothing.
        while not self.should_stop:
            await asyncio.sleep(0.5)
            thread = self._thread
            if thread is not None and not thread.is_alive() and not self.sink_stopping:
                reason = self._failure or RuntimeError("history sink thread exited")
                await self.crash(reason)
                return

    @property
    def sink_stopping(self) -> bool:
        return self.sink.stopping

    async def on_stop(self) -> None:
        self.sink.stop()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, _SINK_STOP_TIMEOUT_S)
            if thread.is_alive():
                log.error("history sink did not stop within %.0fs", _SINK_STOP_TIMEOUT_S)


def create_app(
    settings: Settings,
    *,
    web_port: int | None = None,
    history_sink: bool = True,
    identity: bool | None = None,
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
    if history_sink:
        service = type("HistorySinkService", (HistorySinkService,), {"settings": settings})
        app.service(service)
        # The identity tables (migration 0003) are filled by their own sink, with its own group.
        from streams.agents.identity_sink import identity_sink_service_for

        app.service(identity_sink_service_for(settings))
    if settings.identity_enabled if identity is None else identity:
        # Identity resolver + link writer (streams/agents/identity*.py), OMNISEG_IDENTITY_ENABLED.
        from streams.agents.identity_service import identity_service_for

        app.service(identity_service_for(settings))
    return app
