"""Reading an export into rows: JSONL calls, CSV lines grouped by transaction, deterministic message ids.

A CSV row keeps its cells (one dict per line, as :class:`csv.DictReader` gives them); the Segment call
is built from them only when the event is not on the fast path (:mod:`streams.sources.import_events`).
"""

from __future__ import annotations

import csv
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from streams.domain.events import loads_json

_IMPORT_NAMESPACE = uuid.UUID("5b0f8a52-2a6e-4c55-9f4e-7f3c2d1a9b10")
_NAMESPACE_BYTES = _IMPORT_NAMESPACE.bytes
IDENTIFIER_COLUMNS = ("email", "phone", "loyaltyCard", "espSubscriberId", "crmId")
STORE_COLUMNS = ("storeId", "terminalId", "transactionId")
LINE_COLUMNS = ("ean", "sku", "appProductId", "quantity", "unitPrice", "currency")
PRODUCT_COLUMNS = ("ean", "sku", "appProductId")
_FLAGS = {"true": True, "false": False}


@dataclass(slots=True)
class Row:
    """One input unit: the call to validate (JSONL), the CSV lines of one event, or why it could not be
    read; with where it came from."""

    line: int
    raw: bytes
    call: dict[str, Any] | None
    error: str | None = None
    field: str | None = None
    cells: list[dict[str, str]] | None = None

    def segment_call(self) -> dict[str, Any] | None:
        """The Segment call of this row (built from the CSV cells when it has them)."""
        if self.call is None and self.cells is not None:
            self.call = csv_call(self.cells)
        return self.call


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
    """Rows of a CSV export; consecutive lines of one transaction become one event.

    Reads with :func:`csv.reader` and builds each line's dict as :class:`csv.DictReader` does (blank lines
    skipped, a short line's missing cells None, more cells than the header an error), so line numbers,
    raw bytes and message ids stay those of the DictReader-based reader.
    """
    reader = csv.reader(text_lines)
    header = next(reader, None)
    if header is None:
        return
    width = len(header)
    group: list[dict[str, str]] = []
    group_line = 0
    group_txn = ""
    for cells in reader:
        if not cells:
            continue  # a blank line
        number = reader.line_num
        record: dict[Any, Any] = dict(zip(header, cells, strict=False))
        size = len(cells)
        if size != width:
            if size > width:
                record[None] = cells[width:]
                yield Row(number, _csv_bytes(record), None, f"line {number} has more cells than the header")
                continue
            for key in header[size:]:
                record[key] = None
        txn = (record.get("transactionId") or "").strip()
        if group and (not txn or txn != group_txn):
            yield _csv_row(group_line, group)
            group = []
        if not group:
            group_line, group_txn = number, txn
        group.append(record)
        if not txn:
            yield _csv_row(group_line, group)
            group = []
    if group:
        yield _csv_row(group_line, group)


def _csv_bytes(record: dict[Any, Any]) -> bytes:
    return orjson.dumps({str(k): v for k, v in record.items()})


def _csv_row(number: int, group: list[dict[str, str]]) -> Row:
    raw = orjson.dumps(group[0]) if len(group) == 1 else b"\n".join(list(map(orjson.dumps, group)))
    return Row(number, raw, None, None, None, group)


def _flag(text: str) -> bool | str:
    """``true`` / ``false`` in any case as a boolean; anything else stays text, and is refused."""
    return _FLAGS.get(text.lower(), text)


def csv_call(group: list[dict[str, str]]) -> dict[str, Any]:
    """The Segment call of one CSV event (its lines: one, or a transaction's basket lines)."""
    cells = {key: (value or "").strip() for key, value in group[0].items()}
    call: dict[str, Any] = {"type": cells.get("type") or "track"}
    if call["type"] == "track":
        call["event"] = cells.get("event") or "Order Completed"
    elif cells.get("event"):
        call["event"] = cells["event"]
    for key in ("messageId", "timestamp", "userId", "anonymousId"):
        if cells.get(key):
            call[key] = cells[key]
    identifiers = {key: cells[key] for key in IDENTIFIER_COLUMNS if cells.get(key)}
    if identifiers:
        call["identifiers"] = identifiers
    if cells.get("storeId"):
        call["store"] = {key: cells[key] for key in STORE_COLUMNS if cells.get(key)}
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
    for record in group:
        line = {key: (record.get(key) or "").strip() for key in LINE_COLUMNS}
        if any(line[key] for key in PRODUCT_COLUMNS):
            lines.append({key: value for key, value in line.items() if value})
    if lines:
        call["lines"] = lines
    return call


def message_id_for(source: str, row: Row) -> str:
    """Deterministic, so importing the same file twice yields the same ids (dedup downstream).

    ``uuid5(namespace, f"{source}:{line}:{sha256(raw)[:16]}")``, computed without building UUID objects.
    """
    digest = hashlib.sha256(row.raw).hexdigest()[:16]
    name = f"{source}:{row.line}:{digest}".encode()
    h = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
