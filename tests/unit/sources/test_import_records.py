"""The importer writes the same records, byte for byte, as before its fast path: on the example exports,
on a generated POS export with bad rows, and on random CSV cells that reach every fallback."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.bench.pos_rows import write_pos_csv
from streams.sources.import_events import CsvEventWriter
from streams.sources.import_rows import csv_rows, jsonl_rows, message_id_for
from streams.sources.importer import ImportSummary, RecordWriter
from tests.unit.sources import importer_reference as reference

EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples"
RECEIVED = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
TOPIC, INVALID = "events.store", "events.invalid"


def _current(text: str, fmt: str = "csv", source: str = "pos.csv") -> list[tuple[str, bytes, bytes]]:
    writer = RecordWriter("store", source, TOPIC, INVALID, RECEIVED)
    summary = ImportSummary()
    rows = (
        csv_rows(iter(io.StringIO(text, newline="")))
        if fmt == "csv"
        else jsonl_rows(iter(text.encode().splitlines(True)))
    )
    return [writer.record(row, summary) for row in rows]


def _before(text: str, fmt: str = "csv", source: str = "pos.csv") -> list[tuple[str, bytes, bytes]]:
    if fmt == "csv":
        rows = reference.csv_rows(iter(io.StringIO(text, newline="")))
    else:
        rows = reference.jsonl_rows(iter(text.encode().splitlines(True)))
    return reference.reference_records(rows, "store", source, TOPIC, INVALID, RECEIVED)


def test_example_exports_give_the_same_records_as_before() -> None:
    for name in ("pos_export.csv", "consent_export.csv", "esp_export.jsonl"):
        text = (EXAMPLES / name).read_text(encoding="utf-8-sig")
        fmt = "jsonl" if name.endswith(".jsonl") else "csv"
        before = _before(text, fmt, name)
        assert before, name
        assert _current(text, fmt, name) == before, name


def test_a_generated_pos_export_gives_the_same_records_as_before(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    write_pos_csv(path, 6000, bad_every=50)
    text = path.read_text()
    before = _before(text)
    assert sum(topic == INVALID for topic, _, _ in before) > 10
    assert _current(text) == before


def test_plain_pos_lines_take_the_fast_path(tmp_path: Path) -> None:
    path = tmp_path / "pos.csv"
    write_pos_csv(path, 2000, bad_every=0)
    rows = list(csv_rows(iter(io.StringIO(path.read_text(), newline=""))))
    assert rows and rows[0].cells is not None
    writer = CsvEventWriter(tuple(rows[0].cells[0]), "store", "pos.csv", RECEIVED)
    assert all(writer.record(row.cells or [], message_id_for("pos.csv", row)) is not None for row in rows)


def test_derived_message_id_is_uuid5_of_source_line_and_content() -> None:
    (row,) = csv_rows(iter(io.StringIO("userId,event\nu1,X\n", newline="")))
    (old,) = reference.csv_rows(iter(io.StringIO("userId,event\nu1,X\n", newline="")))
    assert message_id_for("s", row) == reference.message_id_for("s", old)
    assert uuid.UUID(message_id_for("s", row)).version == 5


_COLUMNS = (
    "transactionId",
    "type",
    "event",
    "messageId",
    "timestamp",
    "userId",
    "anonymousId",
    "loyaltyCard",
    "email",
    "storeId",
    "terminalId",
    "campaign",
    "ean",
    "sku",
    "quantity",
    "unitPrice",
    "currency",
    "properties.channel",
    "traits.tier",
    "consent.advertising",
    "consent.email",
)
_TIMES = st.one_of(
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2027, 1, 1)).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "2026-11-20T10:15:00Z",
            "2026-11-20T10:15:00.5+05:30",
            "2026-11-20T10:15:00.1234567Z",
            "2026-11-20 10:15:00",
            "2026-11-20T23:59:59-23:59",
            "1700000000",
            "2026-02-30T00:00:00Z",
            "2030-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "not-a-time",
            "",
            "2026-11-20t10:15:00z",
            "\u0662\u0660\u0662\u0666-11-20T10:15:00Z",
        ]
    ),
)
_NUMBERS = st.one_of(
    st.sampled_from(
        ["", "1", "2", "-0", "0.50", "3.", "1e3", " 2 ", "abc", "inf", "nan", "01", "1_0", "\u0661"]
    ),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1000, max_value=1000).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
_TEXT = st.one_of(
    st.sampled_from(["", " ", "a", " padded ", "LDN-01", "x" * 257, "x" * 256, "é"]),
    st.text(max_size=12),
)
_CELLS = {
    "transactionId": st.sampled_from(["", "T1", "T1", "T2"]),
    "type": st.sampled_from(["", "track", "identify", "page", "screen", "alias", "group", "other", "Track"]),
    "timestamp": _TIMES,
    "quantity": _NUMBERS,
    "unitPrice": _NUMBERS,
    "currency": st.sampled_from(["", "GBP", "EURO", "€", " gb "]),
    "consent.advertising": st.sampled_from(["", "true", "FALSE", "maybe", " True "]),
    "consent.email": st.sampled_from(["", "false"]),
}


_HEAD = "transactionId,timestamp,storeId,loyaltyCard,ean,quantity,unitPrice,currency"
_AHEAD = "2026-12-05T12:00:00.123Z"  # exactly 24 hours after RECEIVED (to the millisecond)


@pytest.mark.parametrize(
    "line",
    [
        "T1,2026-11-20T10:15:00Z,LDN-01,6337 1,501,\u0661,2.50,GBP",  # an Arabic-Indic digit
        "T1,\u0662\u0660\u0662\u0666-11-20T10:15:00Z,LDN-01,6337 1,501,1,2.50,GBP",
        "T1,2026-11-20T10:15:00Z,LDN-01,6337 1,501,-0,-0.0,GBP",
        "T1,2026-11-20T10:15:00Z,LDN-01,6337 1,501,1e3,2.5,GBP",
        "T1,2026-11-20T10:15:00Z,LDN-01,6337 1,501,1,2.5,\u20ac",
        "T1,2026-11-20T10:15:00Z,LDN-01,6337 1,501,1,2.5,GBPX",
        f"T1,{_AHEAD},LDN-01,6337 1,501,1,2.5,GBP",
        "T1,2026-12-05T12:00:00.124Z,LDN-01,6337 1,501,1,2.5,GBP",
        "T1,1970-01-01T00:00:00Z,LDN-01,6337 1,501,1,2.5,GBP",
        "T1,1970-01-01T01:00:00+01:01,LDN-01,6337 1,501,1,2.5,GBP",
        "T1,2026-11-20T10:15:00.999999-05:30,LDN-01,6337 1,501,1,2.5,GBP",
        "T1,2026-11-20T10:15:00,LDN-01,,501,1,2.5,GBP",
        "T1,2026-11-20T10:15:00,,6337 1,,,,",
    ],
)
def test_edge_cells_give_the_same_records_as_before(line: str) -> None:
    text = f"{_HEAD}\n{line}\n"
    assert _current(text) == _before(text)


def test_a_time_past_year_9999_in_utc_is_a_bad_row_not_a_crash() -> None:
    text = f"{_HEAD}\nT1,9999-12-31T23:59:59-05:00,LDN-01,6337 1,501,1,2.5,GBP\n"
    ((topic, _, value),) = _current(text)
    assert topic == INVALID
    assert b"beyond the year 9999" in value


def test_a_basket_over_the_line_limit_gives_the_same_records_as_before() -> None:
    text = (
        _HEAD
        + "\n"
        + "".join(f"T1,2026-11-20T10:15:00Z,LDN-01,6337 1,50{i},1,2.5,GBP\n" for i in range(1001))
    )
    before = _before(text)
    assert before[0][0] == INVALID
    assert _current(text) == before


@st.composite
def _csv_text(draw: st.DrawFn) -> str:
    header = draw(st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=len(_COLUMNS), unique=True))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for _ in range(draw(st.integers(1, 6))):
        row = [draw(_CELLS.get(column, _TEXT)) for column in header]
        shape = draw(st.sampled_from(["full", "full", "full", "short", "long", "blank"]))
        if shape == "short":
            row = row[: max(0, len(row) - 1)]
        elif shape == "long":
            row = [*row, "extra"]
        elif shape == "blank":
            out.write("\n")
        writer.writerow(row)
    return out.getvalue()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_csv_text())
def test_random_csv_cells_give_the_same_records_as_before(text: str) -> None:
    assert _current(text) == _before(text)
