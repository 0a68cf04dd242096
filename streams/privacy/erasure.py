"""Erasure of one person through every store, with its proof and receipt (docs/privacy.md).

The steps, each waited for before the next:

1. Find the person in ClickHouse from one identifier or person id (canonical person and merged ids).
   Refuse when an erasure of the same person is in progress. Log the request (``received``).
2. Send the request to the link writer on ``identity.links``: it removes the person's identifiers
   from the graph (tombstones on ``identity.assignments`` and ``identity.persons``), suppresses them
   unless told not to (``privacy.suppressions``), and publishes one ``erased`` change per person id.
   The resolvers drop the identifiers from their replicas.
3. Wait for the ``erased`` changes; then for the segment stage to process them (exits on
   ``segments.changes``, the audience writer told to forget the person, tombstones on
   ``segments.state``), for the audience writer (removal deltas), and for the sinks to write all of it
   (:mod:`streams.kafka.drain`).
4. Delete the person's rows from every ClickHouse table (:mod:`streams.warehouse.erasure`).
5. Prove it: no ClickHouse row and no live record of a compacted topic names the person. Events that
   were in flight when the erasure began can still arrive; when the proof finds something, steps 2-5
   run again (at most ``_ROUNDS`` times).
6. Log the request ``done`` with its receipt (or ``failed`` with the reason).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from streams.domain.identifiers import Identifier
from streams.domain.privacy import Receipt, new_request_id, subject_of
from streams.kafka.config import consumer_config, producer_config
from streams.kafka.drain import wait_processed
from streams.kafka.partitioner import murmur2_partition
from streams.kafka.reading import partitions_of
from streams.privacy.compacted import live_records_naming
from streams.settings import CHANNELS, Settings
from streams.sinks.audiences import audiences_sink_group
from streams.sinks.identity import identity_sink_group
from streams.stages.identity.link_writer import ERASURE, RECORD_HEADER, writer_group
from streams.stages.identity.resolver import resolver_group
from streams.topics import (
    AUDIENCE_DELTAS_TOPIC,
    AUDIENCE_INPUTS_TOPIC,
    IDENTITY_ASSIGNMENTS_TOPIC,
    IDENTITY_CHANGES_TOPIC,
    IDENTITY_LINKS_TOPIC,
    INVALID_TOPIC,
    RESOLVED_TOPIC,
    SEGMENT_CHANGES_TOPIC,
    SEGMENT_FORWARD_TOPIC,
)
from streams.warehouse import erasure as warehouse
from streams.warehouse import privacy_requests
from streams.warehouse.persons import PersonStore
from streams.wire.codecs import ERASURE_REQUEST_CODEC, IDENTITY_CHANGE_CODEC

log = logging.getLogger("streams.privacy.erasure")

_ROUNDS = 3
# Producers' clocks differ a little: records stamped this long before a moment count as before it.
_SKEW_MS = 2_000
_TIMEOUT_S = 60.0

Progress = Callable[[str], None]


class ErasureRefused(ValueError):
    """The request cannot start (unknown person, one already in progress); nothing was changed."""


class ErasureInProgress(ErasureRefused):
    """An erasure of the same person is received or in progress."""


class ErasureUnsupported(ErasureRefused):
    """The installation cannot run an erasure (a ClickHouse cluster: docs/clickhouse_cluster.md)."""


class ErasureFailed(RuntimeError):
    """The erasure started but did not finish; the request is logged ``failed`` with this reason."""


@dataclass(frozen=True)
class Subject:
    """The person to erase: the canonical id and every id merged into it, as ClickHouse knows them."""

    canonical: str
    person_ids: tuple[str, ...]


def find_subject(client: Any, identifier: Identifier | None, person_id: str | None) -> Subject:
    """The person owning ``identifier`` (or with id ``person_id``); raises :class:`ErasureRefused`."""
    store = PersonStore(client)
    if identifier is not None:
        owner = store.owner(identifier)
        if owner is None:
            raise ErasureRefused(f"no person has identifier {identifier.key}")
    else:
        assert person_id is not None
        known = (
            client.execute("SELECT count() FROM event_persons WHERE person_id = %(p)s", {"p": person_id})[0][
                0
            ]
            + client.execute(
                "SELECT count() FROM person_aliases WHERE person_id = %(p)s OR canonical_person_id = %(p)s",
                {"p": person_id},
            )[0][0]
        )
        if not known:
            raise ErasureRefused(f"no person has id {person_id}")
        owner = person_id
    canonical = store.canonical(owner)
    return Subject(canonical, store.person_ids(canonical))


@dataclass
class Erasure:
    """One erasure request run to its end (:meth:`run`)."""

    settings: Settings
    client: Any  # clickhouse-driver Client on the omniseg database
    subject: Subject
    suppress: bool = True
    request_id: str = ""
    timeout_s: float = 300.0
    progress: Progress = lambda _line: None

    def __post_init__(self) -> None:
        self.request_id = self.request_id or new_request_id()
        self.receipt = Receipt()
        self._started = time.monotonic()
        self._requested_at = datetime.now(UTC)
        self._subject_hash = subject_of(self.subject.canonical)

    # -- the request log ------------------------------------------------------------------------------

    def _log(self, status: str, detail: str = "") -> None:
        privacy_requests.record(
            self.client.execute,
            self.request_id,
            "erasure",
            self._subject_hash,
            status,
            self.suppress,
            self.receipt.to_dict(),
            detail,
            requested_at=self._requested_at,
        )

    def _step(self, name: str) -> None:
        self.receipt.steps.append((name, time.monotonic() - self._started))
        self.progress(name)

    def open(self) -> None:
        """Log the request, or refuse when one for the same person is in progress (or when the
        installation cannot erase: nothing is published then)."""
        if self.settings.clickhouse_cluster:
            raise ErasureUnsupported(
                "erasure does not run on a ClickHouse cluster yet (OMNISEG_CLICKHOUSE_CLUSTER="
                f"{self.settings.clickhouse_cluster}): its deletes must go to the replicated tables on "
                "every replica; nothing was erased (docs/clickhouse_cluster.md)"
            )
        active = privacy_requests.active_for(self.client.execute, "erasure", self._subject_hash)
        if active is not None:
            raise ErasureInProgress(
                f"an erasure of this person is already in progress (request {active.request_id}, "
                f"{active.status} since {active.requested_at:%Y-%m-%d %H:%M:%S} UTC)"
            )
        self._log("received")

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> Receipt:
        """Erase, prove, log ``done``; on any failure log ``failed`` and raise :class:`ErasureFailed`."""
        try:
            self._log("in_progress")
            sql = warehouse.DriverSql(self.client)
            database = self.settings.clickhouse_database
            ids = set(self.subject.person_ids)
            for round_number in range(1, _ROUNDS + 1):
                self.receipt.rounds = round_number
                ids |= self._erase_in_pipeline(sorted(ids))
                footprint = warehouse.collect(sql, ids)
                ids |= footprint.person_ids
                self.receipt.person_ids = max(self.receipt.person_ids, len(ids))
                self.receipt.identifiers = max(self.receipt.identifiers, len(footprint.identifiers))
                self._step(f"deleting from ClickHouse (round {round_number})")
                self.receipt.add_rows(warehouse.delete(sql, database, footprint, self.progress))
                self._step("proving nothing is left")
                left = warehouse.verify(sql, database, footprint)
                live = live_records_naming(self.settings, footprint.person_ids | footprint.identifiers)
                if not left and not live:
                    self._step("done")
                    self._log("done")
                    return self.receipt
                where = ", ".join(f"{name}: {count}" for name, count in sorted({**left, **live}.items()))
                self.progress(f"still found after round {round_number} ({where}); erasing again")
            raise ErasureFailed(f"the person was still found after {_ROUNDS} rounds ({where})")
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self._log("failed", reason)
            if isinstance(exc, ErasureFailed):
                raise
            raise ErasureFailed(reason) from exc

    def _erase_in_pipeline(self, person_ids: list[str]) -> set[str]:
        """Steps 2 and 3 for every id; returns the ids the link writer erased with them."""
        settings, t = self.settings, self.settings.topic
        sent_ms = int(time.time() * 1000)
        self._step("sending the request to the link writer")
        producer = Producer(producer_config(settings, "omniseg-erasure"))
        try:
            for pid in person_ids:
                record = {"requestId": self.request_id, "personId": pid, "suppress": self.suppress,
                          "at": sent_ms}  # fmt: skip
                producer.produce(
                    t(IDENTITY_LINKS_TOPIC.name),
                    key=self.request_id.encode(),
                    value=ERASURE_REQUEST_CODEC.encode(record),
                    headers=[(RECORD_HEADER, ERASURE)],
                )
            if producer.flush(_TIMEOUT_S):
                raise ErasureFailed("the erasure request could not be sent to Kafka")
        finally:
            producer.flush(1.0)
        self._step("waiting for the link writer")
        erased = self._await_erased(person_ids, sent_ms - _SKEW_MS)
        self.receipt.add_records(t(IDENTITY_CHANGES_TOPIC.name), len(erased))
        waits: list[tuple[str, list[str], str]] = [
            (resolver_group(settings), [settings.channel_topic(c) for c in CHANNELS], "the resolvers"),
            (writer_group(settings), [t(IDENTITY_LINKS_TOPIC.name)], "the link writer"),
            (settings.segments_group,
             [t(RESOLVED_TOPIC.name), t(IDENTITY_CHANGES_TOPIC.name), t(SEGMENT_FORWARD_TOPIC.name)],
             "the segment stage"),
            (settings.audiences_group, [t(AUDIENCE_INPUTS_TOPIC.name)], "the audience writer"),
            (settings.sink_group, [*(settings.channel_topic(c) for c in CHANNELS), t(INVALID_TOPIC.name)],
             "the events sink"),
            (identity_sink_group(settings),
             [t(IDENTITY_ASSIGNMENTS_TOPIC.name), t(IDENTITY_CHANGES_TOPIC.name), t(RESOLVED_TOPIC.name)],
             "the identity sink"),
            (f"{settings.sink_group}.segments", [t(SEGMENT_CHANGES_TOPIC.name)], "the segments sink"),
            (audiences_sink_group(settings), [t(AUDIENCE_DELTAS_TOPIC.name)], "the audiences sink"),
        ]  # fmt: skip
        for group, topics, what in waits:
            self._step(f"waiting for {what}")
            since = int(time.time() * 1000) - _SKEW_MS
            if not wait_processed(settings, group, topics, since, self._left(), what, self.progress):
                self.progress(f"{what} (group {group}) has never committed an offset: not deployed, skipped")
                self.receipt.skipped.add(what)
        return erased

    def _left(self) -> float:
        left = self.timeout_s - (time.monotonic() - self._started)
        if left <= 0:
            raise ErasureFailed(f"the erasure did not finish within {self.timeout_s:.0f}s")
        return left

    def _await_erased(self, person_ids: list[str], since_ms: int) -> set[str]:
        """Read ``identity.changes`` until every id's ``erased`` change of this request is there;
        returns the ids they name (the graph's view of the person, which ClickHouse may lag)."""
        settings = self.settings
        topic = settings.topic(IDENTITY_CHANGES_TOPIC.name)
        reader = Consumer(
            consumer_config(settings, f"{settings.segments_group}.erasure", "omniseg-erasure-reader")
        )
        try:
            count = len(partitions_of(reader, topic, _TIMEOUT_S))
            wanted = set(person_ids)
            named: set[str] = set()
            seen: set[str] = set()
            watched: set[int] = set()
            while True:
                partitions = {murmur2_partition(pid.encode(), count) for pid in wanted | named} - watched
                if partitions:
                    found = reader.offsets_for_times(
                        [TopicPartition(topic, p, since_ms) for p in sorted(partitions)], _TIMEOUT_S
                    )
                    # No record that new yet: from the end (an end answered too low only re-reads).
                    starts = [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
                              for tp in found]  # fmt: skip
                    current = reader.position(reader.assignment()) if watched else []
                    reader.assign([*current, *starts])
                    watched |= partitions
                for msg in reader.consume(500, 0.2):
                    value = msg.value()
                    if msg.error() is not None or value is None:
                        continue
                    change = IDENTITY_CHANGE_CODEC.decode(value)
                    if change["kind"] == "erased" and change["messageId"] == self.request_id:
                        seen.add(change["personId"])
                        named |= set(change["mergedPersonIds"])
                if (wanted | named) <= seen:
                    return named | wanted
                self._left()
        finally:
            reader.close()
