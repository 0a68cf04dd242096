"""The data-subject request log (``privacy_requests``, migration 0012): one row per request and state,
the newest (``revision``) current. Rows hold no personal data: the subject is a hash of the person id
(:func:`streams.domain.privacy.subject_of`), the receipt counts rows and records."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.warehouse.sql_text import Rows, integer, quote

ACTIVE = ("received", "in_progress")


@dataclass(frozen=True)
class Request:
    request_id: str
    kind: str
    status: str
    suppress: bool
    receipt: dict[str, Any]
    detail: str
    requested_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "status": self.status,
            "suppress": self.suppress,
            "receipt": self.receipt,
            "detail": self.detail,
            "requested_at": self.requested_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def record(
    execute: Rows,
    request_id: str,
    kind: str,
    subject: str,
    status: str,
    suppress: bool,
    receipt: dict[str, Any],
    detail: str,
    requested_at: datetime | None = None,
) -> None:
    """Write the request's current state (a new row; the newest revision wins)."""
    now_ms = int(time.time() * 1000)
    requested = requested_at or datetime.fromtimestamp(now_ms / 1000, UTC)
    execute(
        "INSERT INTO privacy_requests (request_id, kind, subject, status, suppress, receipt, detail, "
        "requested_at, updated_at, revision) SELECT "
        f"{quote(request_id)}, {quote(kind)}, {quote(subject)}, {quote(status)}, {integer(int(suppress))}, "
        f"{quote(json.dumps(receipt, separators=(',', ':'), sort_keys=True))}, {quote(detail)}, "
        f"toDateTime({integer(int(requested.timestamp()))}), toDateTime({integer(now_ms // 1000)}), "
        f"{integer(now_ms)}"
    )


_COLUMNS = (
    "request_id, argMax(kind, revision), argMax(status, revision), argMax(suppress, revision), "
    "argMax(receipt, revision), argMax(detail, revision), min(requested_at), max(updated_at)"
)


def _request(row: tuple[Any, ...]) -> Request:
    def stamp(value: Any) -> datetime:
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)

    return Request(
        str(row[0]),
        str(row[1]),
        str(row[2]),
        bool(int(row[3])),
        json.loads(str(row[4]) or "{}"),
        str(row[5]),
        stamp(row[6]),
        stamp(row[7]),
    )


def find(rows: Rows, request_id: str) -> Request | None:
    found = rows(
        f"SELECT {_COLUMNS} FROM privacy_requests WHERE request_id = {quote(request_id)} GROUP BY request_id"
    )
    return _request(found[0]) if found else None


def active_for(rows: Rows, kind: str, subject: str) -> Request | None:
    """The request of ``kind`` for ``subject`` still received or in progress, if any."""
    found = rows(
        f"SELECT {_COLUMNS}, argMax(subject, revision) AS who FROM privacy_requests "
        f"WHERE subject = {quote(subject)} GROUP BY request_id "
        f"HAVING argMax(kind, revision) = {quote(kind)} AND argMax(status, revision) IN {ACTIVE!r} "
        "ORDER BY min(requested_at) DESC LIMIT 1"
    )
    return _request(found[0]) if found else None


def recent(rows: Rows, limit: int = 50) -> list[Request]:
    return [
        _request(row)
        for row in rows(
            f"SELECT {_COLUMNS} FROM privacy_requests GROUP BY request_id "
            f"ORDER BY min(requested_at) DESC, request_id LIMIT {integer(limit)}"
        )
    ]
