"""Subject access reads: everything ClickHouse holds about one person, table by table (read-only).

The person is found as the single customer view finds it (:class:`PersonStore`: the identifier's owner,
its canonical person, and every id merged into it); each section then filters its table by those ids:

- ``identifiers``: ``identities``, the newest assignment of every identifier that one of the ids owns;
- ``merges`` / ``rejections``: ``identity_merges`` / ``identity_rejections`` naming one of the ids;
- ``consent``: the person's events' consent columns, row for row what ``consent_statements`` (0010)
  gives, read from ``events`` directly because the view reads the whole table before any filter;
- ``segment_history`` / ``segments_current``: ``segment_changes``, every change and the memberships
  whose newest change is an enter (the rule of ``segment_membership_current``);
- ``audiences``: ``audience_members`` rows whose hash one of the person's identifiers gives;
- ``usecase_exposures``: ``usecase_exposures`` rows of the ids;
- ``events``: every column of the ``events`` rows whose newest resolution (``event_persons``) names
  one of the ids, newest first, read in pages on a keyset of (timestamp, message_id, channel).

Where a row's content can differ between copies (``identities`` versions, ``event_persons``
resolutions), FINAL is applied before the person filter, so a superseded copy never brings a row in.
Every query runs on ClickHouse 18.16 and current ClickHouse: no window or JSON functions, no JOIN.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_driver import Client

from streams.domain.identifiers import Identifier
from streams.domain.subject_access import (
    FORMAT,
    AudienceMatch,
    Section,
    audience_candidates,
    chunks,
    document,
    iso,
    receipt,
    record,
    subject_of,
)
from streams.warehouse import privacy_requests
from streams.warehouse.persons import PersonNotFound, PersonStore

EVENTS_PAGE = 10_000
# Column kinds that are computed from others and not stored as sent (dedup_version of 0007).
_COMPUTED = frozenset({"MATERIALIZED", "ALIAS"})
# The messages whose newest resolution names one of %(ids)s.
_MESSAGES = (
    "SELECT channel, message_id FROM ("
    "SELECT channel, message_id, person_id FROM event_persons FINAL "
    "WHERE (channel, message_id) IN "
    "(SELECT channel, message_id FROM event_persons WHERE person_id IN %(ids)s)"
    ") WHERE person_id IN %(ids)s"
)


@dataclass(frozen=True, slots=True)
class Subject:
    """The person an access request is about."""

    looked_up: str  # the normalised identifier key asked for
    person_id: str  # canonical
    person_ids: tuple[str, ...]  # the canonical id first, then every id merged into it


class SubjectAccess:
    """Reads one person's data through a client connected to the omniseg database."""

    def __init__(self, client: Client, page: int = EVENTS_PAGE) -> None:
        self._client = client
        self._store = PersonStore(client)
        self._page = page
        self._columns: dict[str, tuple[str, ...]] = {}

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._client.execute(sql, params)]

    def columns(self, table: str) -> tuple[str, ...]:
        """The stored columns of ``table`` in table order (computed columns left out)."""
        if table not in self._columns:
            described = self._client.execute(f"DESCRIBE TABLE {table}")
            self._columns[table] = tuple(str(row[0]) for row in described if str(row[2]) not in _COMPUTED)
        return self._columns[table]

    def subject(self, identifier: Identifier) -> Subject:
        """The canonical person owning ``identifier`` and its ids; raises :class:`PersonNotFound`."""
        owner = self._store.owner(identifier)
        if owner is None:
            raise PersonNotFound(f"no person has identifier {identifier.key}")
        canonical = self._store.canonical(owner)
        return Subject(identifier.key, canonical, self._store.person_ids(canonical))

    def _table(
        self, name: str, table: str, where: str, order: str, ids: Sequence[str], source: str = ""
    ) -> Section:
        columns = self.columns(table)
        rows = self._rows(
            f"SELECT {', '.join(columns)} FROM {table} FINAL WHERE {where} ORDER BY {order}",
            {"ids": tuple(ids), "id_list": list(ids)},
        )
        return Section(name, source or table, [record(columns, row) for row in rows])

    def identifiers(self, subject: Subject) -> Section:
        columns = self.columns("identities")
        names = ", ".join(columns)
        rows = self._rows(
            f"SELECT {names} FROM (SELECT {names} FROM identities FINAL WHERE identifier IN "
            "(SELECT identifier FROM identities WHERE person_id IN %(ids)s)) "
            "WHERE person_id IN %(ids)s ORDER BY identifier",
            {"ids": subject.person_ids},
        )
        return Section(
            "identifiers",
            "identities",
            [record(columns, row) for row in rows],
            {"rows_are": "the newest assignment of every identifier the person owns"},
        )

    def sections(self, subject: Subject, identifier_keys: Sequence[str]) -> list[Section]:
        """Every section but identifiers and events (those come first and last)."""
        ids = subject.person_ids
        return [
            self._table(
                "person_aliases",
                "person_aliases",
                "person_id IN %(ids)s OR canonical_person_id IN %(ids)s",
                "person_id, canonical_person_id",
                ids,
            ),
            self._table(
                "merges",
                "identity_merges",
                "person_id IN %(ids)s OR merged_person_id IN %(ids)s "
                "OR hasAny(merged_person_ids, %(id_list)s)",
                "at_ms, change_id",
                ids,
            ),
            self._table(
                "rejections",
                "identity_rejections",
                "person_id IN %(ids)s OR conflicting_person_id IN %(ids)s",
                "at_ms, change_id",
                ids,
            ),
            self.consent(subject),
            self._table(
                "segment_history",
                "segment_changes",
                "person_id IN %(ids)s",
                "at_ms, segment_id, subject, seq",
                ids,
            ),
            self.segments_current(subject),
            self.audiences(identifier_keys),
            self._table(
                "usecase_exposures",
                "usecase_exposures",
                "person_id IN %(ids)s",
                "at_ms, usecase_id, version, change_id",
                ids,
            ),
        ]

    def consent(self, subject: Subject) -> Section:
        columns = (
            "message_id",
            "type",
            "channel",
            "source",
            "timestamp",
            "timestamp_ms",
            "category",
            "granted",
        )
        rows = self._rows(
            "SELECT message_id, type, channel, source, timestamp, timestamp_ms, category, granted "
            "FROM events FINAL ARRAY JOIN consent_categories AS category, consent_granted AS granted "
            f"WHERE (channel, message_id) IN ({_MESSAGES}) "
            "ORDER BY timestamp_ms, message_id, category",
            {"ids": subject.person_ids},
        )
        return Section(
            "consent",
            "events.consent_categories / consent_granted (the consent_statements view's rows)",
            [record(columns, row) for row in rows],
            {"rows_are": "one row per consent category an event stated: granted 1, refused 0"},
        )

    def segments_current(self, subject: Subject) -> Section:
        columns = ("segment_id", "subject", "person_id", "seq", "since", "definition_version", "email",
                   "phone", "esp_subscriber_id", "user_id", "crm_id", "loyalty_card")  # fmt: skip
        rows = self._rows(
            "SELECT segment_id, subject, person_id, max(seq) AS max_seq, argMax(at, seq), "
            "argMax(definition_version, seq), argMax(email, seq), argMax(phone, seq), "
            "argMax(esp_subscriber_id, seq), argMax(user_id, seq), argMax(crm_id, seq), "
            "argMax(loyalty_card, seq) FROM segment_changes WHERE person_id IN %(ids)s "
            "GROUP BY segment_id, subject, person_id HAVING modulo(max_seq, 2) = 1 "
            "ORDER BY segment_id, subject, person_id",
            {"ids": subject.person_ids},
        )
        return Section(
            "segments_current",
            "segment_changes (the segment_membership_current view's rule)",
            [record(columns, row) for row in rows],
        )

    def audiences(self, identifier_keys: Sequence[str]) -> Section:
        candidates = audience_candidates(identifier_keys)
        about = {
            "rows_are": "audience rows (added 1, removed 0) whose hash one of the person's identifiers "
            "gives; matched_by names the identifier and the platform's hashing"
        }
        hashes = tuple(sorted({hashed for _, hashed in candidates}))
        if not hashes:
            return Section("audiences", "audience_members", [], about)
        columns = self.columns("audience_members")
        rows = self._rows(
            f"SELECT {', '.join(columns)} FROM audience_members FINAL WHERE hash IN %(hashes)s "
            "ORDER BY destination_id, audience_id, kafka_offset, kind, hash",
            {"hashes": hashes},
        )
        found = []
        for row in rows:
            item = record(columns, row)
            matches: list[AudienceMatch] = candidates.get((str(item["kind"]), str(item["hash"])), [])
            if matches:
                item["matched_by"] = [{"identifier": m.identifier, "platform": m.platform} for m in matches]
                found.append(item)
        return Section("audiences", "audience_members", found, about)

    def event_count(self, subject: Subject) -> int:
        rows = self._rows(
            f"SELECT count() FROM events FINAL WHERE (channel, message_id) IN ({_MESSAGES})",
            {"ids": subject.person_ids},
        )
        return int(rows[0][0])

    def events(self, subject: Subject, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The person's events, newest first, every column, read ``page`` rows at a time."""
        columns = self.columns("events")
        sql = (
            f"SELECT {', '.join(columns)}, toString(channel) AS channel_name FROM events FINAL "
            f"WHERE (channel, message_id) IN ({_MESSAGES}) {{after}}"
            "ORDER BY timestamp DESC, message_id DESC, channel_name DESC LIMIT %(page)s"
        )
        after = ""
        params: dict[str, Any] = {"ids": subject.person_ids}
        left = limit
        while left is None or left > 0:
            params["page"] = self._page if left is None else min(self._page, left)
            rows = self._rows(sql.format(after=after), params)
            for row in rows:
                yield record(columns, row[:-1])
            if left is not None:
                left -= len(rows)
            if len(rows) < params["page"]:
                return
            last = rows[-1]
            params.update(
                ts=last[columns.index("timestamp")], mid=last[columns.index("message_id")], ch=last[-1]
            )
            after = (
                "AND (timestamp < %(ts)s OR (timestamp = %(ts)s AND (message_id < %(mid)s "
                "OR (message_id = %(mid)s AND toString(channel) < %(ch)s)))) "
            )


@dataclass
class Export:
    """One access request: the header, the sections in document order (events last, read lazily)."""

    request_id: str
    subject: Subject
    header: dict[str, Any]
    sections: list[Section]
    events_total: int
    events_truncated: bool

    def chunks(self) -> Iterator[str]:
        """The JSON document as text pieces (events page by page)."""
        return chunks(self.header, self.sections)

    def document(self) -> dict[str, Any]:
        """The JSON document as one dict (for a bounded export: the API's)."""
        return document(self.header, self.sections)

    def receipt(self) -> dict[str, Any]:
        return receipt(self.sections, events_total=self.events_total, events_truncated=self.events_truncated)


def prepare(
    client: Client,
    identifier: Identifier,
    *,
    request_id: str,
    max_events: int | None = None,
    now: datetime | None = None,
    page: int = EVENTS_PAGE,
) -> Export:
    """Read everything but the events, which the export reads as it is written (:meth:`Export.chunks`).

    Raises :class:`PersonNotFound` when nobody has the identifier."""
    access = SubjectAccess(client, page)
    subject = access.subject(identifier)
    identifiers = access.identifiers(subject)
    rows = list(identifiers.rows)
    keys = [str(row["identifier"]) for row in rows]
    total = access.event_count(subject)
    truncated = max_events is not None and total > max_events
    events_about: dict[str, Any] = {
        "order": "newest first (timestamp, then message_id)",
        "total": total,
        "truncated": truncated,
    }
    if truncated:
        events_about["note"] = (
            f"the first {max_events} of {total} events; omniseg person export writes them all"
        )
    header = {
        "format": FORMAT,
        "generated_at": iso(now or datetime.now(UTC)),
        "request_id": request_id,
        "looked_up": subject.looked_up,
        "person_id": subject.person_id,
        "merged_person_ids": list(subject.person_ids[1:]),
    }
    sections = [
        Section(identifiers.name, identifiers.source, rows, identifiers.about),
        *access.sections(subject, keys),
        Section("events", "events", access.events(subject, limit=max_events), events_about),
    ]
    return Export(request_id, subject, header, sections, total, truncated)


def record_request(client: Client, export: Export, status: str, detail: str = "") -> None:
    """Log the request in ``privacy_requests``: kind access, the subject as a hash, the row counts."""
    privacy_requests.record(
        lambda sql: [tuple(row) for row in client.execute(sql)],
        export.request_id,
        "access",
        subject_of(export.subject.person_id),
        status,
        False,
        export.receipt(),
        detail,
    )


def new_request_id() -> str:
    return f"access-{uuid.uuid4()}"
