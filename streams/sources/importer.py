"""Bulk import of source exports (POS, ESP) into a channel topic: ``omniseg import``.

Formats
-------
JSONL: one Segment-spec call per line, exactly what a source would POST to ``/v1/track`` (``type``
defaults to ``track``; the omniseg extensions ``identifiers``, ``store`` and ``lines`` are accepted).

CSV (header row required; what POS and ESP exports look like): one row per event, or per basket line.
Consecutive rows with the same non-empty ``transactionId`` form one event whose ``lines`` are the rows.

============================  ===========================================================
column                        meaning
============================  ===========================================================
messageId                     optional; derived from file name, line and content if empty
type, event                   default ``track`` and ``Order Completed``
timestamp                     ISO 8601 (a naive time is taken as UTC)
userId, anonymousId           Segment ids
email, phone, loyaltyCard,    identifiers (normalised later by identity resolution)
espSubscriberId, crmId
storeId, terminalId,          where a store event happened
transactionId
ean, sku, appProductId,       one product line; quantity defaults to 1
quantity, unitPrice, currency
campaign                      context.campaign.name (ESP exports)
properties.X, traits.X        any other property or trait, as text
consent.X                     the person's consent for purpose X: true or false (a bulk consent
                              import: rows of type identify with an identifier and a timestamp)
============================  ===========================================================

Timestamps are taken as they are (no clock-skew correction: an exported ``sentAt`` is not now); one
more than a day after the import, or before 1970, is a bad row. Bad rows go to ``events.invalid``
with their line number and reason; the import goes on. A derived
messageId makes re-importing the same file idempotent downstream (dedup by messageId).

Plain CSV events (short text cells, ISO 8601 times, decimal numbers) are checked and written without
the pydantic model (:mod:`streams.sources.import_events`), with the same bytes; every other row goes
through ``Event.from_segment``. Records are produced with few Python calls and delivery reports for
failures only: the import reports success only when the producer holds nothing unacknowledged and no
failure was reported.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from streams.api.intake import describe_validation_error
from streams.domain.events import ChannelName, Event
from streams.kafka.config import bulk_producer_config
from streams.settings import Settings
from streams.sources.import_events import CsvEventWriter
from streams.sources.import_rows import Row, csv_rows, jsonl_rows, message_id_for
from streams.topics import INVALID_TOPIC
from streams.wire.codecs import EVENT_CODEC, encode_invalid

__all__ = [
    "ImportFailed",
    "ImportSummary",
    "Importer",
    "RecordWriter",
    "Row",
    "csv_rows",
    "detect_format",
    "jsonl_rows",
    "message_id_for",
    "open_rows",
]

# Rows between two progress reports and producer polls.
PROGRESS_EVERY = 2000


class ImportFailed(RuntimeError):
    """The import could not run (missing file, unknown format, broker unreachable); says why."""


@dataclass
class ImportSummary:
    rows: int = 0
    events: int = 0
    invalid: int = 0
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"rows read: {self.rows:,}; events produced: {self.events:,}; invalid: {self.invalid:,} "
            f"(to events.invalid); {self.seconds:.1f} s, {rate:,.0f} rows/s"
        ]
        lines += [f"  {reason}" for reason in self.reasons]
        return "\n".join(lines)


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise ImportFailed(f"cannot tell the format of {path.name} from its extension; pass --format csv|jsonl")


class RecordWriter:
    """Rows -> the records to produce: ``(topic, key, value)``, the event or its ``events.invalid`` record.

    No I/O: the importer produces what it returns, and the tests compare it with the model's path.
    """

    def __init__(
        self, channel: ChannelName, source: str, topic: str, invalid_topic: str, received_at: datetime
    ) -> None:
        self.channel: ChannelName = channel
        self.source = source
        self.topic = topic
        self.invalid_topic = invalid_topic
        self.received_at = received_at
        self._csv: CsvEventWriter | None = None

    def record(self, row: Row, summary: ImportSummary) -> tuple[str, bytes, bytes]:
        if row.cells is not None:
            cells = row.cells
            csv_writer = self._csv
            if csv_writer is None or csv_writer.header != tuple(cells[0]):
                csv_writer = self._csv = CsvEventWriter(
                    tuple(cells[0]), self.channel, self.source, self.received_at
                )
            first = cells[0]
            derived = None if (first.get("messageId") or "").strip() else message_id_for(self.source, row)
            fast = csv_writer.record(cells, derived)
            if fast is not None:
                summary.events += 1
                return self.topic, fast[0], fast[1]
        call = row.segment_call()
        if call is not None:
            if not call.get("messageId"):
                call = {**call, "messageId": message_id_for(self.source, row)}
            try:
                event = Event.from_segment(
                    call, channel=self.channel, source=self.source, received_at=self.received_at
                )
            except ValidationError as exc:
                row.field, row.error = describe_validation_error(exc)
            except OverflowError:
                # A time whose offset moves it past year 9999 in UTC: the model cannot convert it.
                row.error = "a time in the row lies beyond the year 9999 once converted to UTC"
            else:
                summary.events += 1
                return self.topic, event.partition_key(), EVENT_CODEC.encode(event.to_avro())
        summary.invalid += 1
        reason = row.error or "unreadable row"
        if len(summary.reasons) < 5:
            summary.reasons.append(f"line {row.line}: {reason}")
        value = encode_invalid(
            "import",
            reason,
            source=self.source,
            position=f"line {row.line}",
            original=row.raw,
            field=row.field,
            received_at=self.received_at,
        )
        return self.invalid_topic, self.source.encode(), value


class Importer:
    """Validates rows into events and produces them; bad rows go to ``events.invalid``."""

    def __init__(
        self, settings: Settings, channel: ChannelName, source: str, delivery_timeout_s: float = 60.0
    ) -> None:
        self.settings = settings
        self.delivery_timeout_s = delivery_timeout_s
        self.channel: ChannelName = channel
        self.source = source
        self.topic = settings.channel_topic(channel)
        self.invalid_topic = settings.topic(INVALID_TOPIC.name)
        self._failed: list[str] = []
        self._lock = threading.Lock()
        # Delivery reports come for failures only; success is the producer holding nothing after flush.
        self._producer = Producer(
            bulk_producer_config(
                settings,
                client_id="omniseg-import",
                on_delivery=self._delivered,
                **{"message.timeout.ms": int(delivery_timeout_s * 1000)},
            )
        )

    def check_broker(self, timeout_s: float = 10.0) -> None:
        try:
            topics = self._producer.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise ImportFailed(
                f"cannot reach Kafka at {self.settings.kafka_bootstrap} within {timeout_s:.0f} s: {exc}"
            ) from exc
        missing = [name for name in (self.topic, self.invalid_topic) if name not in topics]
        if missing:
            raise ImportFailed(
                f"topics missing on {self.settings.kafka_bootstrap}: {missing}; run omniseg topics create"
            )

    def run(
        self,
        rows: Iterator[Row],
        progress: Callable[[int], None] = lambda _n: None,
        received_at: datetime | None = None,
    ) -> ImportSummary:
        """Produce every row; ``progress`` gets the rows done since its last call."""
        summary = ImportSummary()
        started = time.monotonic()
        writer = RecordWriter(
            self.channel, self.source, self.topic, self.invalid_topic, received_at or datetime.now(UTC)
        )
        record = writer.record
        produce = self._producer.produce
        poll = self._producer.poll
        done = 0
        for row in rows:
            topic, key, value = record(row, summary)
            try:
                produce(topic, value, key)
            except BufferError:
                self._produce_when_room(topic, key, value)
            except KafkaException as exc:
                raise ImportFailed(f"line {row.line}: the producer refused the record: {exc}") from exc
            done += 1
            if done == PROGRESS_EVERY:
                summary.rows += done
                progress(done)
                done = 0
                poll(0)
                self._stop_on_failure()
        summary.rows += done
        progress(done)
        # Every record is delivered or reported failed within delivery_timeout_s of being queued.
        remaining = self._producer.flush(self.delivery_timeout_s + 5)
        summary.seconds = time.monotonic() - started
        if remaining or self._failed:
            raise ImportFailed(self._incomplete(remaining))
        return summary

    def _produce_when_room(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            self._producer.poll(0.05)  # local queue full: let deliveries drain
            self._stop_on_failure()
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:
                continue
            except KafkaException as exc:
                raise ImportFailed(f"the producer refused a record: {exc}") from exc

    def _stop_on_failure(self) -> None:
        if self._failed:
            raise ImportFailed(self._incomplete(self._producer.flush(10)))

    def _incomplete(self, unacknowledged: int) -> str:
        first = f" (first error: {self._failed[0]})" if self._failed else ""
        return (
            f"the broker did not acknowledge {len(self._failed) + unacknowledged:,} records{first}; "
            "the import is incomplete, run it again (the message ids stay the same)"
        )

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._failed.append(err.str())


def open_rows(path: Path, fmt: str) -> tuple[Iterator[Row], io.BufferedReader]:
    """The rows of ``path`` and the open binary handle (its position drives a byte progress bar)."""
    if not path.exists():
        raise ImportFailed(f"{path}: no such file")
    handle = path.open("rb")
    if fmt == "jsonl":
        return jsonl_rows(iter(handle)), handle
    if fmt == "csv":
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
        return csv_rows(iter(text)), handle
    handle.close()
    raise ImportFailed(f"unknown format {fmt!r}; use csv or jsonl")
