"""The pipeline benchmark's audience probe: the time from producing a probe event to its person's hashed
identifiers being visible in a delta of an ad-platform audience, as the pull API reads deltas.

The bench publishes one destination, ``bench`` (generic, email and external id, advertising granted by
default), that reads the probe segment. Every probe enters a person into it, so the person's hashes are
added; a thread asks for the audience's deltas every ``POLL_S`` with the API's own query and tail, and
notes when each probe's first hash appears (the poll interval bounds the error: at most ``POLL_S``
late).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from functools import partial

from clickhouse_driver import Client

from streams.api.delta_tail import DeltaTail
from streams.dev.stack import clickhouse_client
from streams.dev.workload import shopper_identifiers
from streams.domain.audiences.destinations import audience_id, load_destinations
from streams.domain.audiences.hashing import AudienceIdKind, Platform, hash_identifier
from streams.domain.audiences.state import Configuration
from streams.domain.consent import ConsentPolicy
from streams.domain.identifiers import IdKind
from streams.settings import Settings
from streams.warehouse import audiences as queries

DESTINATION = "bench"
AUDIENCE = audience_id("probe", None)
POLL_S = 0.05
_CONFIGURATION = f"""
id: {DESTINATION}
kind: generic
api_key_sha256: "{"0" * 63}1"
identifiers: [email, external_id]
audiences:
  - segment: probe
"""


def bench_configuration() -> Configuration:
    """The bench's one destination, with advertising granted to persons who never said."""
    destinations = load_destinations([("bench destination", _CONFIGURATION)])
    return Configuration(tuple(destinations), ConsentPolicy(defaults={"advertising": True}))


def person_hashes(person: int) -> list[str]:
    """The hashes a probe person's entry adds: its email and its customer id (external id)."""
    ids = {identifier.kind: identifier.value for identifier in shopper_identifiers(person)}
    return [
        hash_identifier(Platform.GENERIC, AudienceIdKind.EMAIL, ids[IdKind.EMAIL]),
        hash_identifier(Platform.GENERIC, AudienceIdKind.EXTERNAL_ID, ids[IdKind.CUSTOMER_ID]),
    ]


class AudienceWatch:
    """Asks for the audience's deltas every ``POLL_S`` as the pull API answers them (ClickHouse, then
    the records ClickHouse does not have yet from the API's :class:`DeltaTail`), from the cursor it
    started at; ``seen[message_id]`` is when the first hash of that probe's person was visible (wall
    time, ``time.time()``)."""

    def __init__(self, settings: Settings, probes: Iterable[tuple[str, int]]) -> None:
        self._client: Client = clickhouse_client(settings, settings.clickhouse_database)
        self._by_hash = {h: message_id for message_id, person in probes for h in person_hashes(person)}
        self.wanted = len({message_id for message_id in self._by_hash.values()})
        self.seen: dict[str, float] = {}
        self._cursor = queries.frontier(self._client)
        self._tail: DeltaTail | None = None
        if settings.api_delta_tail:
            new_client = partial(clickhouse_client, settings, settings.clickhouse_database)
            self._tail = DeltaTail(settings, queries.frontier_reader(new_client))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audience-watch", daemon=True)

    def start(self) -> None:
        if self._tail is not None:
            self._tail.start()
            self._tail.wait_for(self._cursor, 30)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            page = queries.deltas(
                self._client, DESTINATION, AUDIENCE, self._cursor, queries.MAX_DELTAS, self._tail
            )
            now = time.time()
            self._cursor = page.next_cursor
            for member in page.adds:
                message_id = self._by_hash.get(member.hash)
                if message_id is not None and message_id not in self.seen:
                    self.seen[message_id] = now
            if not page.more:
                self._stop.wait(POLL_S)

    def finish(self, timeout_s: float, done: Callable[[], bool] | None = None) -> None:
        """Wait until every probe was seen (or ``timeout_s``), then stop polling."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.seen) < self.wanted and not (done and done()):
            time.sleep(POLL_S)
        self._stop.set()
        self._thread.join(10)
        if self._tail is not None:
            self._tail.close()
        self._client.disconnect()
