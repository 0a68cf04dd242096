"""The backfill job: history from ClickHouse -> backfill parts on ``segments.forward`` (docs/backfill.md).

When a definition needs a behaviour feature no earlier definition kept, the segment workers count it
from the moment they apply the definition (and remember which events they counted:
``SegmentEngine.await_backfill``). This job reads the person's events from before that out of the
warehouse, keeps what each new feature counts of them (``history_entries``) and sends them to the
person's owner as backfill parts, keyed by person on the co-partitioned ``segments.forward``; the
owner adds them once and publishes the changes they cause with trigger ``backfill``.

The cut between history and the live stream is a position on ``events.resolved``: the run takes the
end offsets of every partition when it starts (after ``settle_s``, by which workers have applied the
definitions) and waits until the segment workers, the identity sink (``event_persons``) and the history
sink (``events``) have all committed past them. Events before the cut come from ClickHouse (those the
workers already counted live are skipped by their message hash); events after it only from the stream.

The history is read in pages: a page is the persons whose canonical id (after merges) hashes to it,
ordered by person, so one person's events arrive together and memory stays bounded (the page's persons
are the right side of the join, held in memory by ClickHouse; ``events`` is scanned once per page).
``events`` is read without FINAL: a message stored twice is counted once by its hash
(``history_entries``); ``event_persons`` with FINAL, so the newest resolution of a message wins.

Progress is kept in ``segment_backfills`` (migration 0014) after each page: a run that stops resumes at
the next page with the same cut, and the parts it sends again are ignored by their owners.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from clickhouse_driver import Client
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from streams.domain.segments.backfill import HistoryCounter, split_parts
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent, line_item, segment_event
from streams.domain.segments.model import SegmentDefinition
from streams.kafka.config import consumer_config, producer_config
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import CHANNELS, Settings
from streams.sinks.identity import identity_sink_group
from streams.topics import RESOLVED_TOPIC, SEGMENT_FORWARD_TOPIC
from streams.wire.segments import encode_backfill, encode_backfill_end

Progress = Callable[[str], None]
_TIMEOUT_S = 30.0
_PROGRESS_EVERY_S = 2.0


class BackfillError(RuntimeError):
    """A backfill cannot run; the message says why and what to do."""


class WorkersBehind(BackfillError):
    """The workers have not processed up to the cut (not running, or too slow): no run was started."""


@dataclass
class BackfillRun:
    """One run's plan and figures (a row of ``segment_backfills``)."""

    run_id: str
    segments: tuple[str, ...]
    features: tuple[str, ...]
    since_ms: int  # events before it are outside every feature's window (0: a lifetime feature)
    cut_offsets: tuple[int, ...]  # per events.resolved partition: the first offset not read
    pages: int
    pages_done: int = 0
    persons: int = 0
    events_read: int = 0
    entries: int = 0
    parts_sent: int = 0
    seconds: float = 0.0
    status: str = "running"
    message: str = ""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def rate(self) -> float:
        return self.events_read / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"backfill {self.run_id}: page {self.pages_done}/{self.pages}, {self.persons:,} persons, "
            f"{self.events_read:,} events read ({self.rate():,.0f} events/s), {self.entries:,} counted, "
            f"{self.parts_sent:,} parts sent"
        )


_RUN_COLUMNS = (
    "run_id, segments, features, status, since_ms, cut_offsets, pages, pages_done, persons, events_read, "
    "entries, parts_sent, seconds, message, started_at, updated_at_ms"
)


def save_run(client: Client, run: BackfillRun) -> None:
    client.execute(
        f"INSERT INTO segment_backfills ({_RUN_COLUMNS}) VALUES",
        [
            (
                run.run_id,
                list(run.segments),
                list(run.features),
                run.status,
                run.since_ms,
                list(run.cut_offsets),
                run.pages,
                run.pages_done,
                run.persons,
                run.events_read,
                run.entries,
                run.parts_sent,
                run.seconds,
                run.message,
                run.started_at,
                time.time_ns() // 1_000_000,
            )
        ],
    )


def load_runs(client: Client, limit: int = 20) -> list[BackfillRun]:
    """The newest runs first."""
    rows = client.execute(
        f"SELECT {_RUN_COLUMNS} FROM segment_backfills FINAL ORDER BY started_at DESC, run_id LIMIT %(n)s",
        {"n": limit},
    )
    runs = []
    for row in rows:
        run = BackfillRun(
            run_id=row[0],
            segments=tuple(row[1]),
            features=tuple(row[2]),
            since_ms=row[4],
            cut_offsets=tuple(row[5]),
            pages=row[6],
            pages_done=row[7],
            persons=row[8],
            events_read=row[9],
            entries=row[10],
            parts_sent=row[11],
            seconds=row[12],
            status=row[3],
            message=row[13],
            started_at=row[14],
        )
        runs.append(run)
    return runs


def clickhouse_client(settings: Settings) -> Client:
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=settings.clickhouse_database,
        connect_timeout=5,
        send_receive_timeout=600,
        client_name="omniseg-segment-backfill",
    )


# -- reading history ----------------------------------------------------------------------------------

# The event as the segment stage names it: a track call's event name, else the call type.
_NAME = "if(type = 'track' AND event != '', event, toString(type))"

PAGE_SQL = f"""
SELECT person, message_id, timestamp_ms, segment_name, toString(channel) AS channel_name, device_type,
    user_agent, timezone, properties, line_sku, line_ean, line_app_product_id, line_quantity,
    line_unit_price
FROM
(
    SELECT channel, message_id, timestamp_ms, {_NAME} AS segment_name, device_type, user_agent,
        timezone, properties, line_sku, line_ean, line_app_product_id, line_quantity, line_unit_price
    FROM events
    WHERE timestamp >= toDateTime(%(since_s)s) AND {_NAME} IN %(names)s
) AS history
ANY INNER JOIN
(
    SELECT if(canonical_person_id = '', resolved_person_id, canonical_person_id) AS person, channel,
        message_id
    FROM
    (
        SELECT person_id AS resolved_person_id, channel, message_id, kafka_partition, kafka_offset
        FROM event_persons FINAL
        WHERE timestamp >= toDateTime(%(since_s)s) AND {_NAME} IN %(names)s
            AND kafka_offset < arrayElement(%(cut)s, kafka_partition + 1)
    ) AS resolved
    ANY LEFT JOIN
    (
        SELECT person_id AS resolved_person_id, canonical_person_id FROM person_canonical
    ) AS canonical USING resolved_person_id
    WHERE cityHash64(person) %% %(pages)s = %(page)s
) AS persons USING (channel, message_id)
ORDER BY person, timestamp_ms
"""

COUNT_SQL = f"""
SELECT count() FROM event_persons
WHERE timestamp >= toDateTime(%(since_s)s) AND {_NAME} IN %(names)s
    AND kafka_offset < arrayElement(%(cut)s, kafka_partition + 1)
"""


def query_params(names: Iterable[str], since_ms: int, cut: Iterable[int]) -> dict[str, Any]:
    """The parameters of PAGE_SQL and COUNT_SQL (add ``pages`` and ``page`` for PAGE_SQL)."""
    return {"since_s": since_ms // 1000, "names": tuple(sorted(names)), "cut": list(cut) or [0]}


def _properties(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def history_event(row: tuple[Any, ...]) -> SegmentEvent:
    """The SegmentEvent of one PAGE_SQL row."""
    (_, message_id, ts, name, channel, device, agent, zone, properties, skus, eans, apps, qty, prices) = row
    lines: tuple[LineItem, ...] = tuple(
        line_item(sku or None, ean or None, app or None, quantity, price)
        for sku, ean, app, quantity, price in zip(skus, eans, apps, qty, prices, strict=False)
    )
    return segment_event(
        message_id, ts, name, channel, device or None, agent or None, zone or None,
        _properties(properties), {}, lines, (),
    )  # fmt: skip


def persons_of(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """(person, their rows) of rows ordered by person."""
    person: str | None = None
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        if row[0] != person:
            if person is not None:
                yield person, batch
            person, batch = row[0], []
        batch.append(row)
    if person is not None:
        yield person, batch


# -- the run ------------------------------------------------------------------------------------------


class BackfillJob:
    """Plans, runs and resumes backfill runs for one deployment (settings)."""

    def __init__(
        self,
        settings: Settings,
        *,
        progress: Progress = lambda line: None,
        client: Client | None = None,
        page_rows: int = 1_000_000,
        per_part: int = 20_000,
        wait_s: float = 600.0,
        settle_s: float = 5.0,
        cut: tuple[int, ...] | None = None,
    ) -> None:
        """``cut``: a fixed cut instead of the topic's ends (benchmarks that fill ClickHouse directly)."""
        self.settings = settings
        self.progress = progress
        self.client = client or clickhouse_client(settings)
        self.page_rows = page_rows
        self.per_part = per_part
        self.wait_s = wait_s
        self.settle_s = settle_s
        self.fixed_cut = cut
        self.forward_topic = settings.topic(SEGMENT_FORWARD_TOPIC.name)
        self.resolved_topic = settings.topic(RESOLVED_TOPIC.name)

    # -- planning

    def engine(self, definitions: Iterable[tuple[SegmentDefinition, int]]) -> SegmentEngine:
        from streams.stages.segments.catalog import CatalogReplica

        replica = CatalogReplica(self.settings)
        try:
            replica.load(_TIMEOUT_S)
        finally:
            replica.close()
        return SegmentEngine(
            definitions,
            replica.catalog,
            timezone=self.settings.segments_timezone,
            hemisphere=self.settings.segments_hemisphere,
        )

    @staticmethod
    def active_definitions(settings: Settings) -> list[tuple[SegmentDefinition, int]]:
        from streams.stages.segments.definitions import DefinitionsFollower

        follower = DefinitionsFollower(settings, client_id="omniseg-segment-backfill")
        try:
            follower.load()
        finally:
            follower.close()
        return list(follower.active.values())

    def run(
        self,
        *,
        segment_ids: Iterable[str] | None = None,
        before: Iterable[tuple[SegmentDefinition, int]] | None = None,
    ) -> BackfillRun | None:
        """Backfill the features of ``segment_ids``, or those the live definitions added to ``before``
        (the definitions before an apply). None when there is nothing to backfill. An unfinished run of
        the same features is resumed."""
        definitions = self.active_definitions(self.settings)
        engine = SegmentEngine(definitions)  # feature ids do not depend on the catalog
        if before is not None:
            features = engine.new_features(SegmentEngine(list(before)))
        else:
            wanted = set(segment_ids or ())
            unknown = sorted(wanted - set(engine.definitions))
            if unknown:
                raise BackfillError(
                    f"no live segment {', '.join(unknown)} (omniseg segments list shows them)"
                )
            features = frozenset(f.id for sid in wanted for f in engine.compiled[sid].features)
        if not features:
            return None
        engine = self.engine(definitions)
        run = self._resume(features) or self._start(engine, features)
        self._pages(engine, run)
        return run

    def _resume(self, features: frozenset[str]) -> BackfillRun | None:
        for run in load_runs(self.client, 100):
            if run.status == "running" and set(run.features) == features:
                self.progress(f"backfill {run.run_id}: resuming at page {run.pages_done + 1} of {run.pages}")
                return run
        return None

    def _start(self, engine: SegmentEngine, features: frozenset[str]) -> BackfillRun:
        ordered = tuple(sorted(features))
        segments = tuple(sorted(engine.segments_reading(features)))
        windows = [engine.features[f].window for f in ordered]
        now = int(time.time() * 1000)
        since = 0 if any(w is None for w in windows) else now - max(w for w in windows if w is not None)
        if self.settle_s > 0:
            self.progress(f"backfill: waiting {self.settle_s:.0f}s for workers to apply the definitions")
            time.sleep(self.settle_s)
        cut = self.fixed_cut if self.fixed_cut is not None else self._cut()
        rows = self.client.execute(COUNT_SQL, self._params(engine, ordered, since, cut))[0][0]
        pages = max(1, math.ceil(rows / self.page_rows))
        run = BackfillRun(uuid.uuid4().hex[:12], segments, ordered, since, cut, pages)
        save_run(self.client, run)
        self.progress(
            f"backfill {run.run_id}: {', '.join(segments)} ({len(ordered)} features), about {rows:,} "
            f"events since {datetime.fromtimestamp(since / 1000, UTC):%Y-%m-%d %H:%M} in {pages} pages"
        )
        return run

    def _cut(self) -> tuple[int, ...]:
        """The ends of events.resolved now, once every reader of it has committed past them.

        If the segment workers are not running (their group's offsets stand still), the cut is where
        they will resume instead: they apply everything after it with the new definitions, and
        everything before it was applied with the old ones."""
        segments_group = self.settings.segments_group
        ends = self._ends(self.resolved_topic, segments_group)
        resume = self._wait_committed(segments_group, {self.resolved_topic: ends}, stopped_ok=True)
        if resume is not None:
            self.progress(
                f"backfill: the segment workers ({segments_group}) are not running: the cut is where "
                "they will resume"
            )
            ends = resume
        self._wait_committed(identity_sink_group(self.settings), {self.resolved_topic: ends})
        channels = {
            topic: self._ends(topic, self.settings.sink_group)
            for topic in (self.settings.channel_topic(c) for c in CHANNELS)
        }
        self._wait_committed(self.settings.sink_group, channels)
        return ends

    def _ends(self, topic: str, group: str) -> tuple[int, ...]:
        """Each partition's end, read from ``group``'s committed offset to where the fetch says it ends
        (a watermark can be too low on Tansu: docs/decisions/0009); reads only the group's lag."""
        consumer = Consumer(
            consumer_config(self.settings, group, "omniseg-backfill", **{"enable.partition.eof": True})
        )
        try:
            partitions = partitions_of(consumer, topic, _TIMEOUT_S)
            committed = consumer.committed([TopicPartition(topic, p) for p in partitions], _TIMEOUT_S)
            starts = [max(c.offset, 0) for c in committed]
            ends = dict(enumerate(starts))

            def seen(msg: Message) -> None:
                partition, offset = msg.partition(), msg.offset()
                if partition is not None and offset is not None:
                    ends[partition] = max(ends[partition], offset + 1)

            start = [TopicPartition(topic, p, offset) for p, offset in zip(partitions, starts, strict=True)]
            read_to_end(consumer, start, seen, _TIMEOUT_S)
            return tuple(ends[p] for p in partitions)
        finally:
            consumer.close()

    def _wait_committed(
        self, group: str, positions: dict[str, tuple[int, ...]], *, stopped_ok: bool = False
    ) -> tuple[int, ...] | None:
        """Wait until ``group`` committed at least ``positions`` (per topic, per partition). A group
        whose offsets stand still is not running: with ``stopped_ok``, its committed offsets of the
        first topic are returned (per partition) instead of failing."""
        wanted = [
            TopicPartition(topic, p, end)
            for topic, ends in positions.items()
            for p, end in enumerate(ends)
            if end
        ]
        if not wanted:
            return None
        consumer = Consumer(consumer_config(self.settings, group, "omniseg-backfill"))
        deadline = time.monotonic() + self.wait_s
        # A running group commits at least every checkpoint: one that has not moved for this long is
        # not running, and waiting for it would only block (an apply before the workers start).
        stall_s = max(30.0, 6 * self.settings.segments_state_flush_s)
        moved_at, last_behind = time.monotonic(), -1
        next_line = 0.0
        try:
            while True:
                committed = consumer.committed(
                    [TopicPartition(t.topic, t.partition) for t in wanted], _TIMEOUT_S
                )
                behind = sum(
                    max(0, w.offset - max(c.offset, 0)) for w, c in zip(wanted, committed, strict=True)
                )
                if not behind:
                    return None
                now = time.monotonic()
                if behind != last_behind:
                    moved_at, last_behind = now, behind
                if stopped_ok and now - moved_at >= stall_s:
                    topic = next(iter(positions))
                    at = {c.partition: max(c.offset, 0) for c in committed if c.topic == topic}
                    return tuple(at.get(p, 0) for p in range(len(positions[topic])))
                if now >= deadline or now - moved_at >= stall_s:
                    raise WorkersBehind(
                        f"consumer group {group} is {behind:,} records behind the backfill's cut and has "
                        f"not committed for {now - moved_at:.0f}s: are the workers running (omniseg "
                        "worker)? Once they are, `omniseg segments backfill run --segment ID` backfills"
                    )
                if now >= next_line:
                    self.progress(f"backfill: waiting for {group} to catch up ({behind:,} records behind)")
                    next_line = now + 10.0
                time.sleep(0.5)
        finally:
            consumer.close()

    def _params(
        self, engine: SegmentEngine, features: tuple[str, ...], since: int, cut: tuple[int, ...]
    ) -> dict[str, Any]:
        return query_params({n for f in features for n in engine.features[f].names}, since, cut)

    # -- sending

    def _pages(self, engine: SegmentEngine, run: BackfillRun) -> None:
        producer = Producer(producer_config(self.settings, "omniseg-segment-backfill", **{"linger.ms": 20}))
        features = [engine.features[f] for f in run.features if f in engine.features]
        params = self._params(engine, run.features, run.since_ms, run.cut_offsets)
        counter = HistoryCounter(
            features, engine.catalog, timezone=engine.timezone, hemisphere=engine.hemisphere
        )
        started = time.monotonic() - run.seconds
        next_line = time.monotonic() + _PROGRESS_EVERY_S
        try:
            for page in range(run.pages_done, run.pages):
                rows = self.client.execute_iter(
                    PAGE_SQL,
                    {**params, "pages": run.pages, "page": page},
                    settings={"max_block_size": 65_536},
                )
                for person, events in persons_of(rows):
                    entries = counter.start()
                    for row in events:
                        counter.add(row[1], row[2], row[3], row[4], partial(history_event, row))
                    now = int(time.time() * 1000)
                    for part in split_parts(run.run_id, person, run.features, entries, self.per_part):
                        self._send(producer, person, encode_backfill(part, now))
                        run.parts_sent += 1
                        run.entries += part.entry_count()
                    run.persons += 1
                    run.events_read += len(events)
                    if time.monotonic() >= next_line:
                        run.seconds = time.monotonic() - started
                        self.progress(run.line())
                        next_line = time.monotonic() + _PROGRESS_EVERY_S
                self._flush(producer)
                run.pages_done = page + 1
                run.seconds = time.monotonic() - started
                save_run(self.client, run)
                self.progress(run.line())
            self._end(producer, run)
        except BaseException as exc:
            run.seconds = time.monotonic() - started
            run.message = f"stopped at page {run.pages_done + 1}: {exc}"[:500]
            save_run(self.client, run)  # still running: the next run resumes it
            raise
        run.status = "done"
        run.seconds = time.monotonic() - started
        save_run(self.client, run)
        self.progress(
            f"backfill {run.run_id}: done: {run.events_read:,} events of {run.persons:,} persons in "
            f"{run.seconds:.1f}s ({run.rate():,.0f} events/s)"
        )

    def _send(self, producer: Producer, person: str, record: bytes) -> None:
        while True:
            try:
                producer.produce(self.forward_topic, record, person.encode(), on_delivery=_raise_failed)
                return
            except BufferError:
                producer.poll(0.1)

    def _end(self, producer: Producer, run: BackfillRun) -> None:
        """The end of the run, on every partition (after every part: each partition is in order)."""
        record = encode_backfill_end(run.run_id, run.features, int(time.time() * 1000))
        meta = producer.list_topics(self.forward_topic, timeout=_TIMEOUT_S).topics[self.forward_topic]
        for partition in sorted(meta.partitions):
            producer.produce(self.forward_topic, record, b"", partition=partition, on_delivery=_raise_failed)
        self._flush(producer)

    def _flush(self, producer: Producer) -> None:
        left = producer.flush(self.settings.produce_timeout_s * 6)
        if left:
            raise BackfillError(
                f"{left} backfill parts not acknowledged by {self.settings.kafka_bootstrap}; run it again "
                "to resume (omniseg segments backfill run --segment ID)"
            )


def _raise_failed(error: Any, msg: Any) -> None:
    if error is not None:
        raise KafkaException(error)
