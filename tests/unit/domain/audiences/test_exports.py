"""CSV lines of audience exports in Google's and Meta's upload formats, and which format fits whom."""

from __future__ import annotations

import csv
import io

import pytest

from streams.domain.audiences.exports import (
    ExportFormat,
    ExportFormatError,
    export_format,
    header,
    row,
    rows,
)
from streams.domain.audiences.hashing import AudienceIdKind, Platform

H = "ab" * 32


@pytest.mark.parametrize(
    ("fmt", "kind", "line"),
    [
        (ExportFormat.GOOGLE, "email", f"{H},\r\n"),
        (ExportFormat.GOOGLE, "phone", f",{H}\r\n"),
        (ExportFormat.GOOGLE, "external_id", None),
        (ExportFormat.GOOGLE, "mobile_advertising_id", None),
        (ExportFormat.META, "email", f"{H},,,\r\n"),
        (ExportFormat.META, "phone", f",{H},,\r\n"),
        (ExportFormat.META, "mobile_advertising_id", f",,{H},\r\n"),
        (ExportFormat.META, "external_id", f",,,{H}\r\n"),
        (ExportFormat.META, "shoe_size", None),
    ],
)
def test_one_identifier_per_row_in_its_kinds_column(fmt: ExportFormat, kind: str, line: str | None) -> None:
    assert row(fmt, kind, H) == line


def test_headers_and_whole_files_parse_as_csv() -> None:
    assert header(ExportFormat.GOOGLE) == "Email,Phone\r\n"
    assert header(ExportFormat.META) == "email,phone,madid,extern_id\r\n"
    members = [("email", H), ("external_id", H), ("phone", H)]
    text, count = rows(ExportFormat.GOOGLE, members)
    assert count == 2
    parsed = list(csv.DictReader(io.StringIO(header(ExportFormat.GOOGLE) + text)))
    assert parsed == [{"Email": H, "Phone": ""}, {"Email": "", "Phone": H}]
    assert rows(ExportFormat.META, []) == ("", 0)
    every_kind = [(kind.value, H) for kind in AudienceIdKind]
    assert rows(ExportFormat.META, every_kind)[1] == len(AudienceIdKind)  # Meta has a column for each


def test_a_destination_exports_in_its_own_platforms_format() -> None:
    assert export_format(Platform.GOOGLE, None) is ExportFormat.GOOGLE
    assert export_format(Platform.META, "meta") is ExportFormat.META
    assert export_format(Platform.GENERIC, "google") is ExportFormat.GOOGLE
    with pytest.raises(
        ExportFormatError, match="follow google_customer_match rules; export it as format google"
    ):
        export_format(Platform.GOOGLE, "meta")
    with pytest.raises(ExportFormatError, match="choose a format: google or meta"):
        export_format(Platform.GENERIC, None)
    with pytest.raises(ExportFormatError, match="unknown format 'tiktok'"):
        export_format(Platform.META, "tiktok")
