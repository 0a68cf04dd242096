"""Subject access (GDPR Art. 15), the pure part: the export document, written section by section.

The warehouse (``streams/warehouse/subject_access.py``) reads the rows; this module turns them into the
``omniseg.subject_access.v1`` JSON document (docs/subject_access.md):

- every value becomes JSON: times as ISO 8601 UTC, arrays as lists, ``traits`` and ``properties`` of an
  event as the JSON object they hold (the text as it is when it is not JSON);
- :func:`chunks` writes the document as text pieces, so a history of any length is written page by page
  and never held whole;
- :func:`audience_candidates` gives the audience hashes the person's identifiers make on every platform,
  because audiences hold hashes only (:mod:`streams.domain.audiences.hashing`);
- :func:`receipt` counts the rows per section for the request log, with no personal data.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from streams.domain.audiences.hashing import AudienceIdKind, NotHashable, Platform, hash_identifier

FORMAT = "omniseg.subject_access.v1"
# Event columns whose text is a JSON document sent by the source.
JSON_COLUMNS = frozenset({"traits", "properties"})
# Identifier kind -> the audience kind its values are sent to ad platforms as
# (streams/stages/segments/activation.py: email, phone, userId, advertisingId).
AUDIENCE_KINDS: Mapping[str, AudienceIdKind] = {
    "email": AudienceIdKind.EMAIL,
    "phone": AudienceIdKind.PHONE,
    "customer_id": AudienceIdKind.EXTERNAL_ID,
    "advertising_id": AudienceIdKind.MOBILE_ADVERTISING_ID,
}


def subject_of(person_id: str) -> str:
    """How the request log names a person: the SHA-256 hex of the canonical person id."""
    return hashlib.sha256(person_id.encode()).hexdigest()


def iso(value: datetime) -> str:
    """ISO 8601 in UTC; naive datetimes (ClickHouse DateTime on a UTC server) are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain(value: Any) -> Any:
    """A ClickHouse value as JSON: times as ISO text, tuples and arrays as lists, nan as null."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def parsed(text: Any) -> Any:
    """A JSON column's value: the object or array it holds, else the text as it is."""
    if not isinstance(text, str) or text.strip()[:1] not in ("{", "["):
        return plain(text)
    try:
        return json.loads(text)
    except ValueError:
        return text


def record(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """One table row as a JSON object, keyed by column name (JSON columns parsed)."""
    return {
        name: parsed(value) if name in JSON_COLUMNS else plain(value)
        for name, value in zip(columns, row, strict=True)
    }


@dataclass(frozen=True, slots=True)
class AudienceMatch:
    """Which of the person's identifiers gives an audience hash, hashed for which platform."""

    identifier: str  # kind:value
    platform: str


def audience_candidates(identifier_keys: Iterable[str]) -> dict[tuple[str, str], list[AudienceMatch]]:
    """``(audience kind, hash) -> matches`` for every platform that takes the identifier's kind.

    Hashes are per platform (Google drops the dots of Gmail addresses), and an audience row names only
    its destination, so every platform's hash is a candidate."""
    found: dict[tuple[str, str], list[AudienceMatch]] = {}
    for key in sorted(set(identifier_keys)):
        kind, _, value = key.partition(":")
        audience_kind = AUDIENCE_KINDS.get(kind)
        if audience_kind is None:
            continue
        for platform in Platform:
            try:
                hashed = hash_identifier(platform, audience_kind, value)
            except NotHashable:
                continue
            found.setdefault((audience_kind.value, hashed), []).append(AudienceMatch(key, platform.value))
    return found


@dataclass(slots=True)
class Section:
    """One key of the document: the rows of one ClickHouse table (or view) for the person.

    ``rows`` may be a generator (events, page by page); ``count`` is filled as they are written."""

    name: str
    source: str
    rows: Iterable[dict[str, Any]]
    about: Mapping[str, Any] = field(default_factory=dict)  # more keys, written before the rows
    count: int = 0


def chunks(header: Mapping[str, Any], sections: Iterable[Section]) -> Iterator[str]:
    """The document as text pieces: ``header`` keys first, then one object per section.

    A section's ``about`` is written before its rows, so it cannot depend on them; the count of rows
    written is on the section afterwards."""
    yield "{\n"
    yield ",\n".join(f"  {_json(key)}: {_json(value)}" for key, value in header.items())
    for section in sections:
        head = {"source": section.source, **section.about}
        yield f",\n  {_json(section.name)}: {{\n"
        yield "".join(f"    {_json(key)}: {_json(value)},\n" for key, value in head.items())
        yield '    "rows": ['
        section.count = 0
        for row in section.rows:
            yield ("\n      " if section.count == 0 else ",\n      ") + _json(row)
            section.count += 1
        yield "\n    ]\n  }" if section.count else "]\n  }"
    yield "\n}\n"


def document(header: Mapping[str, Any], sections: Iterable[Section]) -> dict[str, Any]:
    """The document as one JSON-ready dict (the rows read whole: for bounded sections only)."""
    out = dict(header)
    for section in sections:
        rows = list(section.rows)
        section.count = len(rows)
        out[section.name] = {"source": section.source, **section.about, "rows": rows}
    return out


def receipt(sections: Iterable[Section], **extra: Any) -> dict[str, Any]:
    """The request log's receipt: the rows written per section and its source, no personal data."""
    return {
        "format": FORMAT,
        "sections": {s.name: {"source": s.source, "rows": s.count} for s in sections},
        **extra,
    }


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
