"""The pipeline benchmark's audience probe: the time from producing a probe event to its person's hashed
identifiers being visible in a delta of an ad-platform audience (``audience_deltas`` in ClickHouse,
what the pull API reads).

The bench publishes one destination, ``bench`` (generic, email and external id, advertising granted by
default), that reads the probe segment. Every probe enters a person into it, so the person's hashes are
added; a thread polls ``audience_deltas`` for new rows every ``POLL_S`` and notes when each probe's
first hash appears (the poll interval bounds the error: at most ``POLL_S`` late). Each delta row also
holds the time the audience writer applied its input (``at_ms``), which splits the hop after the
change: up to the writer, and from the writer through its transaction and the sink's insert.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from clickhouse_driver import Client

from streams.dev.stack import clickhouse_client
from streams.dev.workload import shopper_identifiers
from streams.domain.audiences.destinations import audience_id, load_destinations
from streams.domain.audiences.hashing import AudienceIdKind, Platform, hash_identifier
from streams.domain.audiences.state import Configuration
from streams.domain.consent import ConsentPolicy
from streams.domain.identifiers import IdKind
from streams.settings import Settings

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
    """Polls ``audience_deltas`` from the offset it started at; ``seen[message_id]`` is when the first
    hash of that probe's person was visible (wall time, ``time.time()``), ``written[message_id]`` when
    the audience writer applied the input that added it (the writer's wall clock)."""

    def __init__(self, settings: Settings, probes: Iterable[tuple[str, int]]) -> None:
        self._client: Client = clickhouse_client(settings, settings.clickhouse_database)
        self._by_hash = {h: message_id for message_id, person in probes for h in person_hashes(person)}
        self.wanted = len({message_id for message_id in self._by_hash.values()})
        self.seen: dict[str, float] = {}
        self.written: dict[str, float] = {}
        start = self._client.execute("SELECT max(kafka_offset) + 1, count() FROM audience_deltas")[0]
        self._next = int(start[0]) if start[1] else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audience-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self._client.execute(
                # The primary key's prefix (destination, audience, offset): each poll reads only the
                # new rows, not the whole audience, so the watch costs ClickHouse little.
                "SELECT hash, kafka_offset, at_ms FROM audience_deltas "
                "WHERE destination_id = %(destination)s AND audience_id = %(audience)s "
                "AND kafka_offset >= %(next)s AND added = 1",
                {"destination": DESTINATION, "audience": AUDIENCE, "next": self._next},
            )
            now = time.time()
            for digest, offset, at_ms in rows:
                self._next = max(self._next, int(offset) + 1)
                message_id = self._by_hash.get(digest)
                if message_id is not None and message_id not in self.seen:
                    self.seen[message_id] = now
                    self.written[message_id] = at_ms / 1000
            self._stop.wait(POLL_S)

    def finish(self, timeout_s: float, done: Callable[[], bool] | None = None) -> None:
        """Wait until every probe was seen (or ``timeout_s``), then stop polling."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(self.seen) < self.wanted and not (done and done()):
            time.sleep(POLL_S)
        self._stop.set()
        self._thread.join(10)
        self._client.disconnect()
