"""Hosts the identity resolver and the link writer in the Faust worker (``omniseg worker``).

Like the history sink, each runs a confluent-kafka loop in its own thread (Faust's per-event path is too
slow for the targets, see BENCHMARKS.md); the service starts and stops them with the worker, and a dead
thread crashes the worker rather than leaving one that looks healthy and resolves nothing.
"""

from __future__ import annotations

import logging

from streams.domain.identity import IdentityRules
from streams.kafka.hosting import Loop, ThreadedLoops
from streams.settings import Settings
from streams.stages.identity.link_writer import LinkWriter
from streams.stages.identity.resolver import Resolver

log = logging.getLogger("streams.stages.identity.resolver")

_STOP_TIMEOUT_S = 30.0


class IdentityService(ThreadedLoops):
    """Runs :class:`Resolver` and :class:`LinkWriter` threads for the lifetime of the Faust worker."""

    def make_loops(self) -> list[tuple[str, Loop]]:
        rules = IdentityRules.from_yaml(self.settings.identity_rules_path)
        return [
            ("identity-resolver", Resolver(self.settings, rules)),
            ("identity-link-writer", LinkWriter(self.settings, rules)),
        ]


def identity_service_for(settings: Settings) -> type[ThreadedLoops]:
    """The service class to register with ``app.service`` for these settings."""
    return IdentityService.bound(settings)
