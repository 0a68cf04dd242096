"""Audience exports in the ad platforms' CSV upload formats (pure).

- ``google``: Google Ads Customer Match, a customer list of contact information with hashed values:
  header ``Email,Phone``. Each member is one row with its hash in the column of its kind and the other
  column empty (Google matches each row on the identifiers it has).
- ``meta``: Meta Custom Audiences, hashed multi-key: header ``email,phone,madid,extern_id``, one
  identifier per row in the same way.

Hashes are per platform (Google removes the dots of Gmail addresses, Meta writes phones without
``+``), so a destination exports only in its own platform's format; a generic destination may use
either. A kind the format has no column for (external ids in Google's) is left out of the file.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from streams.domain.audiences.hashing import AudienceIdKind, Platform


class ExportFormat(StrEnum):
    GOOGLE = "google"
    META = "meta"


class ExportFormatError(ValueError):
    """A format the destination's hashes do not fit."""


_COLUMNS: dict[ExportFormat, tuple[tuple[str, AudienceIdKind], ...]] = {
    ExportFormat.GOOGLE: (("Email", AudienceIdKind.EMAIL), ("Phone", AudienceIdKind.PHONE)),
    ExportFormat.META: (
        ("email", AudienceIdKind.EMAIL),
        ("phone", AudienceIdKind.PHONE),
        ("madid", AudienceIdKind.MOBILE_ADVERTISING_ID),
        ("extern_id", AudienceIdKind.EXTERNAL_ID),
    ),
}
_PLATFORM = {ExportFormat.GOOGLE: Platform.GOOGLE, ExportFormat.META: Platform.META}
_POSITION = {fmt: {kind.value: i for i, (_, kind) in enumerate(cols)} for fmt, cols in _COLUMNS.items()}


def header(fmt: ExportFormat) -> str:
    """The CSV header line, with its line end."""
    return ",".join(name for name, _ in _COLUMNS[fmt]) + "\r\n"


def row(fmt: ExportFormat, kind: str, hashed: str) -> str | None:
    """One member's CSV line (with its line end), or None when ``fmt`` has no column for ``kind``.

    Hashes are lower-case hex, so no field needs quoting.
    """
    position = _POSITION[fmt].get(kind)
    if position is None:
        return None
    fields = [""] * len(_COLUMNS[fmt])
    fields[position] = hashed
    return ",".join(fields) + "\r\n"


def rows(fmt: ExportFormat, members: Iterable[tuple[str, str]]) -> tuple[str, int]:
    """The CSV lines of ``(kind, hash)`` members as one string, and how many lines it holds."""
    lines = [line for kind, hashed in members if (line := row(fmt, kind, hashed)) is not None]
    return "".join(lines), len(lines)


def default_format(platform: Platform) -> ExportFormat | None:
    """The format of the destination's own platform; None for a generic one, which must choose."""
    for fmt, own in _PLATFORM.items():
        if own == platform:
            return fmt
    return None


def export_format(platform: Platform, asked: str | None) -> ExportFormat:
    """The format to export a destination of ``platform`` in: ``asked``, checked, or its own."""
    if asked is None:
        found = default_format(platform)
        if found is None:
            raise ExportFormatError("choose a format: google or meta")
        return found
    try:
        fmt = ExportFormat(asked)
    except ValueError:
        raise ExportFormatError(f"unknown format {asked!r}: use google or meta") from None
    if platform != Platform.GENERIC and _PLATFORM[fmt] != platform:
        own = default_format(platform)
        raise ExportFormatError(
            f"the destination's hashes follow {platform.value} rules; export it as format {own}"
        )
    return fmt
