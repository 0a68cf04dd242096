"""Hosts the identity resolver and the link writer in the Faust worker (``omniseg worker``).

Like the history sink, each runs a confluent-kafka loop in its own thread (Faust's per-event path is too
slow for the targets, see BENCHMARKS.md); the service starts and stops them with the worker, and a dead
thread crashes the worker rather than leaving one that looks healthy and resolves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Protocol

from mode import Service

from streams.agents.identity import Resolver
from streams.agents.identity_writer import LinkWriter
from streams.domain.identity import IdentityRules
from streams.settings import Settings

log = logging.getLogger("streams.agents.identity")

_STOP_TIMEOUT_S = 30.0


class _Loop(Protocol):
    @property
    def stopping(self) -> bool: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


class IdentityService(Service):
    """Runs :class:`Resolver` and :class:`LinkWriter` threads for the lifetime of the Faust worker."""

    settings: Settings  # set on the subclass made by identity_service_for

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        rules = IdentityRules.from_yaml(self.settings.identity_rules_path)
        self.resolver = Resolver(self.settings, rules)
        self.writer = LinkWriter(self.settings, rules)
        self._threads: list[tuple[_Loop, threading.Thread]] = []
        self._failure: BaseException | None = None

    async def on_start(self) -> None:
        for name, loop in (("identity-resolver", self.resolver), ("identity-link-writer", self.writer)):
            thread = threading.Thread(target=self._run, args=(loop,), name=name, daemon=True)
            self._threads.append((loop, thread))
            thread.start()

    def _run(self, loop: _Loop) -> None:
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
            await asyncio.to_thread(thread.join, _STOP_TIMEOUT_S)
            if thread.is_alive():
                log.error("%s did not stop within %.0fs", thread.name, _STOP_TIMEOUT_S)


def identity_service_for(settings: Settings) -> type[IdentityService]:
    """The service class to register with ``app.service`` for these settings."""
    return type("IdentityService", (IdentityService,), {"settings": settings})
