"""A Faust service that runs stage loops in threads for the lifetime of the worker.

Every stage is a blocking confluent-kafka loop (:mod:`streams.kafka.runtime`; why not per-event Faust
agents: docs/decisions/0004-one-stage-runtime-hosted-by-faust.md). A dead loop thread must not leave a
worker that looks healthy but does nothing, so the service crashes the worker when a loop exits
without being asked to stop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from mode import Service

from streams.settings import Settings

log = logging.getLogger("streams.kafka.hosting")

# Stopping waits for each loop to flush and commit; loops give up on their outputs on their own.
STOP_TIMEOUT_S = 30.0
# The young-generation GC threshold the resolver and the sinks set for their shared process: a pass
# stops every thread of it and its length grows with the young objects, so the default makes batch
# building slow and a much higher one makes long pauses (docs/decisions/0005-gc-and-long-lived-state.md).
GC_YOUNG_THRESHOLD = 10_000


class Loop(Protocol):
    @property
    def stopping(self) -> bool: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


class ThreadedLoops(Service):
    """Subclasses set ``settings`` (via :meth:`bound`) and build their loops in :meth:`make_loops`."""

    settings: Settings

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loops: list[tuple[str, Loop]] = self.make_loops()
        self._threads: list[tuple[Loop, threading.Thread]] = []
        self._failure: BaseException | None = None

    def make_loops(self) -> list[tuple[str, Loop]]:
        raise NotImplementedError

    @classmethod
    def bound(cls, settings: Settings) -> type[ThreadedLoops]:
        """The subclass to register with ``app.service`` for these settings."""
        return type(cls.__name__, (cls,), {"settings": settings})

    async def on_start(self) -> None:
        for name, loop in self.loops:
            thread = threading.Thread(target=self._run, args=(loop,), name=name, daemon=True)
            self._threads.append((loop, thread))
            thread.start()

    def _run(self, loop: Loop) -> None:
        try:
            loop.run()
        except BaseException as exc:
            self._failure = exc
            log.exception("%s crashed: %s", type(loop).__name__, exc)

    @Service.task
    async def _watch(self) -> None:
        while not self.should_stop:
            await asyncio.sleep(0.5)
            for loop, thread in self._threads:
                if not thread.is_alive() and not loop.stopping:
                    await self.crash(self._failure or RuntimeError(f"{thread.name} thread exited"))
                    return

    async def on_stop(self) -> None:
        for loop, _thread in self._threads:
            loop.stop()
        for _loop, thread in self._threads:
            await asyncio.to_thread(thread.join, STOP_TIMEOUT_S)
            if thread.is_alive():
                log.error("%s did not stop within %.0fs", thread.name, STOP_TIMEOUT_S)


class StageService(ThreadedLoops):
    """Runs one stage (``factory(settings)``) in a thread named ``name``."""

    name: str
    factory: Callable[[Settings], Loop]

    def make_loops(self) -> list[tuple[str, Loop]]:
        return [(self.name, self.factory(self.settings))]

    @classmethod
    def for_stage(
        cls, settings: Settings, name: str, factory: Callable[[Settings], Loop]
    ) -> type[ThreadedLoops]:
        """The service class to register with ``app.service``."""
        attrs = {"settings": settings, "name": name, "factory": staticmethod(factory)}
        return type(f"StageService[{name}]", (cls,), attrs)
