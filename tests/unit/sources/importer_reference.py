"""The importer as it was before the fast path (commit 70d433a), kept unchanged except that the
producing class is replaced by :func:`reference_records`: the records it would have produced. The
tests compare the current importer's records with these, byte for byte."""

# ruff: noqa
# mypy: ignore-errors
from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from streams.api.intake import describe_validation_error
from streams.api.producer import producer_config
from streams.domain.events import ChannelName, Event, loads_json
from streams.settings import Settings
from streams.topics import INVALID_TOPIC
from streams.wire.codecs import EVENT_CODEC, encode_invalid

_IMPORT_NAMESPACE = uuid.UUID("5b0f8a52-2a6e-4c55-9f4e-7f3c2d1a9b10")
_IDENTIFIER_COLUMNS = ("email", "phone", "loyaltyCard", "espSubscriberId", "crmId")
_STORE_COLUMNS = ("storeId", "terminalId", "transactionId")
_LINE_COLUMNS = ("ean", "sku", "appProductId", "quantity", "unitPrice", "currency")


class ImportFailed(RuntimeError):
    """The import could not run (missing file, unknown format, broker unreachable); says why."""


@dataclass
class Row:
    """One input unit: the call to validate, or why it could not be read; with where it came from."""

    line: int
    raw: bytes
    call: dict[str, Any] | None
    error: str | None = None
    field: str | None = None


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


def jsonl_rows(lines: Iterator[bytes]) -> Iterator[Row]:
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            call = loads_json(text)
        except ValueError as exc:
            yield Row(number, text, None, f"line {number} is not valid JSON: {exc}")
            continue
        if not isinstance(call, dict):
            yield Row(number, text, None, f"line {number} must be a JSON object, got {type(call).__name__}")
            continue
        call.setdefault("type", "track")
        yield Row(number, text, call)


def csv_rows(text_lines: Iterator[str]) -> Iterator[Row]:
    """Rows of a CSV export as calls; consecutive lines of one transaction become one event."""
    reader = csv.DictReader(text_lines)
    if reader.fieldnames is None:
        return
    group: list[tuple[int, dict[str, str]]] = []
    for record in reader:
        number = reader.line_num
        if None in record:
            yield Row(number, _csv_bytes(record), None, f"line {number} has more cells than the header")
            continue
        txn = (record.get("transactionId") or "").strip()
        if group and (not txn or txn != (group[0][1].get("transactionId") or "").strip()):
            yield _csv_event(group)
            group = []
        group.append((number, record))
        if not txn:
            yield _csv_event(group)
            group = []
    if group:
        yield _csv_event(group)


def _csv_bytes(record: dict[Any, Any]) -> bytes:
    return orjson.dumps({str(k): v for k, v in record.items()})


def _flag(text: str) -> bool | str:
    """``true`` / ``false`` in any case as a boolean; anything else stays text, and is refused."""
    return {"true": True, "false": False}.get(text.lower(), text)


def _csv_event(group: list[tuple[int, dict[str, str]]]) -> Row:
    number, first = group[0]
    cells = {key: (value or "").strip() for key, value in first.items()}
    call: dict[str, Any] = {"type": cells.get("type") or "track"}
    if call["type"] == "track":
        call["event"] = cells.get("event") or "Order Completed"
    elif cells.get("event"):
        call["event"] = cells["event"]
    for key in ("messageId", "timestamp", "userId", "anonymousId"):
        if cells.get(key):
            call[key] = cells[key]
    identifiers = {key: cells[key] for key in _IDENTIFIER_COLUMNS if cells.get(key)}
    if identifiers:
        call["identifiers"] = identifiers
    if cells.get("storeId"):
        call["store"] = {key: cells[key] for key in _STORE_COLUMNS if cells.get(key)}
    if cells.get("campaign"):
        call["context"] = {"campaign": {"name": cells["campaign"]}}
    for prefix in ("properties", "traits"):
        values = {k.split(".", 1)[1]: v for k, v in cells.items() if k.startswith(f"{prefix}.") and v}
        if values:
            call[prefix] = values
    # consent.<purpose> columns: a consent export (true / false; anything else makes the row bad)
    consent = {k.split(".", 1)[1]: _flag(v) for k, v in cells.items() if k.startswith("consent.") and v}
    if consent:
        call.setdefault("traits", {})["consent"] = consent
    lines = []
    for _, record in group:
        line = {key: (record.get(key) or "").strip() for key in _LINE_COLUMNS}
        if any(line[key] for key in ("ean", "sku", "appProductId")):
            lines.append({key: value for key, value in line.items() if value})
    if lines:
        call["lines"] = lines
    raw = b"\n".join(_csv_bytes(record) for _, record in group)
    return Row(number, raw, call)


def message_id_for(source: str, row: Row) -> str:
    """Deterministic, so importing the same file twice yields the same ids (dedup downstream)."""
    digest = hashlib.sha256(row.raw).hexdigest()[:16]
    return str(uuid.uuid5(_IMPORT_NAMESPACE, f"{source}:{row.line}:{digest}"))


def reference_records(
    rows: Iterator[Row],
    channel: ChannelName,
    source: str,
    topic: str,
    invalid_topic: str,
    received_at: datetime,
) -> list[tuple[str, bytes, bytes]]:
    """What ``Importer._one`` produced for each row, in order: (topic, key, value)."""
    out: list[tuple[str, bytes, bytes]] = []
    for row in rows:
        if row.call is not None:
            call = row.call
            if not call.get("messageId"):
                call = {**call, "messageId": message_id_for(source, row)}
            try:
                event = Event.from_segment(call, channel=channel, source=source, received_at=received_at)
            except ValidationError as exc:
                row.field, row.error = describe_validation_error(exc)
            else:
                out.append((topic, event.partition_key(), EVENT_CODEC.encode(event.to_avro())))
                continue
        reason = row.error or "unreadable row"
        record = encode_invalid(
            "import",
            reason,
            source=source,
            position=f"line {row.line}",
            original=row.raw,
            field=row.field,
            received_at=received_at,
        )
        out.append((invalid_topic, source.encode(), record))
    return out


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
