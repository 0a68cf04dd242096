"""Segment membership queries on ClickHouse (migration 0006): who is in a segment, how big segments are,
and which segments a person is in and was in.

Every query reads ``segment_changes`` directly instead of the views, because the views aggregate the
whole table before a filter applies (ClickHouse 18.16 does not push predicates into views):

- by segment: ``WHERE segment_id = ...`` hits the sorting key ``(segment_id, subject, person_id, seq)``,
  so only that segment's granules are read; member pages continue from a keyset cursor on
  ``(subject, person_id)``, never an OFFSET;
- by person: ``person_id`` is not a key prefix, so the person's ids are matched with ``PREWHERE``, which
  reads the ``person_id`` column alone before the rest of the matching rows.

Membership is the rule of the views: per (segment, subject, person) the newest change by ``seq`` decides
(odd seq = entered). Replayed duplicates share their seq and values, so ``max``/``argMax`` read them
exactly without FINAL. With ``at=``, only the changes up to that moment count: membership at time t.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clickhouse_driver import Client

from streams.warehouse.persons import PersonStore

MAX_PAGE = 10_000

# The newest change of each membership, with the contacts it carried. {where} filters segment_changes.
_MEMBERSHIPS = """
SELECT
    segment_id, subject, person_id,
    max(seq) AS last_seq,
    argMax(at_ms, seq) AS last_at_ms,
    argMax(definition_version, seq) AS last_version,
    argMax(email, seq) AS last_email,
    argMax(phone, seq) AS last_phone,
    argMax(esp_subscriber_id, seq) AS last_esp_subscriber_id,
    argMax(user_id, seq) AS last_user_id,
    argMax(crm_id, seq) AS last_crm_id,
    argMax(loyalty_card, seq) AS last_loyalty_card
FROM segment_changes
{prewhere}
WHERE {where}
GROUP BY segment_id, subject, person_id
HAVING modulo(last_seq, 2) = 1  -- odd: entered (modulo, since the driver formats percent signs)
"""


class CursorError(ValueError):
    """A page cursor that :func:`segment_members` did not produce (or for another segment)."""


@dataclass(frozen=True, slots=True)
class Contacts:
    """The person's contact identifiers as of the membership's newest change ('' when unknown)."""

    email: str
    phone: str
    esp_subscriber_id: str
    user_id: str
    crm_id: str
    loyalty_card: str


@dataclass(frozen=True, slots=True)
class SegmentMember:
    segment_id: str
    subject: str  # '' for a segment; product:<id> or category:<name> in a suppression audience
    person_id: str
    seq: int  # the entering change's seq (odd)
    since: datetime  # when the person entered (UTC, ms precision)
    definition_version: int
    contacts: Contacts

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``since`` as ISO 8601)."""
        return {
            "segmentId": self.segment_id,
            "subject": self.subject or None,
            "personId": self.person_id,
            "seq": self.seq,
            "since": self.since.isoformat(),
            "definitionVersion": self.definition_version,
            "contacts": {
                "email": self.contacts.email or None,
                "phone": self.contacts.phone or None,
                "espSubscriberId": self.contacts.esp_subscriber_id or None,
                "userId": self.contacts.user_id or None,
                "crmId": self.contacts.crm_id or None,
                "loyaltyCard": self.contacts.loyalty_card or None,
            },
        }


@dataclass(frozen=True, slots=True)
class MembersPage:
    members: tuple[SegmentMember, ...]
    next_cursor: str | None  # pass it back for the next page; None on the last page


@dataclass(frozen=True, slots=True)
class SegmentSize:
    segment_id: str
    subject: str | None  # None when sizes were not split by subject
    memberships: int  # (subject, person) pairs: equals persons for a segment
    persons: int


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One row of a person's membership history."""

    segment_id: str
    subject: str
    person_id: str  # the id the change was recorded under (a merged id keeps its own history)
    change: str  # entered | exited
    seq: int
    at: datetime
    trigger: str  # event | timer | merge | definition
    reason: str
    message_id: str
    definition_version: int


@dataclass(frozen=True, slots=True)
class PersonSegments:
    person_id: str  # the canonical person
    person_ids: tuple[str, ...]  # it and every id merged into it
    current: tuple[SegmentMember, ...]
    history: tuple[MembershipChange, ...]  # oldest first


def encode_cursor(segment_id: str, subject: str, person_id: str) -> str:
    """An opaque page cursor: the last (subject, person) of a page, bound to its segment."""
    raw = json.dumps([segment_id, subject, person_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, segment_id: str) -> tuple[str, str]:
    """The (subject, person_id) a page ended at; raises :class:`CursorError` for a foreign cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise CursorError(f"invalid cursor {cursor[:40]!r}: not produced by segment_members") from exc
    if not (isinstance(value, list) and len(value) == 3 and all(isinstance(part, str) for part in value)):
        raise CursorError(f"invalid cursor {cursor[:40]!r}: not produced by segment_members")
    if value[0] != segment_id:
        raise CursorError(f"the cursor belongs to segment {value[0]!r}, not {segment_id!r}")
    return value[1], value[2]


def _moment(at: datetime) -> int:
    """``at`` as epoch milliseconds; a naive datetime is taken as UTC."""
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)


def _utc(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, UTC)


def _member(row: tuple[Any, ...]) -> SegmentMember:
    segment_id, subject, person_id, seq, at_ms, version, *contacts = row
    return SegmentMember(
        str(segment_id),
        str(subject),
        str(person_id),
        int(seq),
        _utc(int(at_ms)),
        int(version),
        Contacts(*(str(value) for value in contacts)),
    )


def _memberships_sql(where: list[str], person_prewhere: bool = False) -> str:
    return _MEMBERSHIPS.format(
        prewhere="PREWHERE person_id IN %(ids)s" if person_prewhere else "",
        where=" AND ".join(where) or "1",
    )


def segment_members(
    client: Client,
    segment_id: str,
    subject: str | None = None,
    limit: int = 1000,
    cursor: str | None = None,
    at: datetime | None = None,
) -> MembersPage:
    """Current members of a segment (or its members at ``at``), with contacts, ordered by subject and
    person; ``subject=''`` keeps segment-level memberships only, ``'product:P1'`` one product's."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
    where = ["segment_id = %(segment)s"]
    params: dict[str, Any] = {"segment": segment_id, "limit": limit}
    if subject is not None:
        where.append("subject = %(subject)s")
        params["subject"] = subject
    if cursor is not None:
        params["after_subject"], params["after_person"] = decode_cursor(cursor, segment_id)
        # Spelled out rather than a tuple comparison: the key analysis of 18.16 uses this form.
        where.append(
            "(subject > %(after_subject)s OR (subject = %(after_subject)s AND person_id > %(after_person)s))"
        )
    if at is not None:
        where.append("at_ms <= %(at_ms)s")
        params["at_ms"] = _moment(at)
    sql = _memberships_sql(where) + "ORDER BY subject, person_id LIMIT %(limit)s"
    members = tuple(_member(tuple(row)) for row in client.execute(sql, params))
    next_cursor = None
    if len(members) == limit:
        last = members[-1]
        next_cursor = encode_cursor(segment_id, last.subject, last.person_id)
    return MembersPage(members, next_cursor)


def segment_sizes(
    client: Client,
    segment_ids: list[str] | tuple[str, ...] | None = None,
    by_subject: bool = False,
    at: datetime | None = None,
) -> list[SegmentSize]:
    """Members per segment now (or at ``at``), optionally per subject; segments without members are
    absent. Without ``segment_ids`` every segment is counted (a full read of the history)."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if segment_ids is not None:
        if not segment_ids:
            return []
        where.append("segment_id IN %(segments)s")
        params["segments"] = tuple(segment_ids)
    if at is not None:
        where.append("at_ms <= %(at_ms)s")
        params["at_ms"] = _moment(at)
    group = "segment_id, subject" if by_subject else "segment_id"
    sql = (
        f"SELECT {group}, count() AS memberships, uniqExact(person_id) AS persons "
        f"FROM ({_memberships_sql(where)}) GROUP BY {group} ORDER BY {group}"
    )
    sizes: list[SegmentSize] = []
    for row in client.execute(sql, params):
        if by_subject:
            segment_id, subject, memberships, persons = row
            sizes.append(SegmentSize(str(segment_id), str(subject), int(memberships), int(persons)))
        else:
            segment_id, memberships, persons = row
            sizes.append(SegmentSize(str(segment_id), None, int(memberships), int(persons)))
    return sizes


def person_segments(client: Client, person_id: str, history: int = 1000) -> PersonSegments:
    """A person's current segments and membership history (newest ``history`` changes, oldest first),
    over the person's canonical id and every id merged into it."""
    store = PersonStore(client)
    canonical = store.canonical(person_id)
    ids = store.person_ids(canonical)
    params: dict[str, Any] = {"ids": ids, "canonical": canonical, "limit": max(0, history)}
    # A merged id exited all its segments at the merge, so current membership is the canonical id's.
    current = tuple(
        _member(tuple(row))
        for row in client.execute(
            _memberships_sql(["person_id = %(canonical)s"], person_prewhere=True)
            + "ORDER BY segment_id, subject",
            params,
        )
    )
    rows = client.execute(
        "SELECT segment_id, subject, person_id, toString(change), seq, any(at_ms) AS at_ms, any(trigger), "
        "any(reason), any(message_id), any(definition_version) FROM segment_changes "
        "PREWHERE person_id IN %(ids)s "
        "GROUP BY segment_id, subject, person_id, change, seq "  # replayed duplicates collapse
        "ORDER BY at_ms DESC, seq DESC LIMIT %(limit)s",
        params,
    )
    changes = [
        MembershipChange(
            str(segment_id),
            str(subject),
            str(pid),
            str(change),
            int(seq),
            _utc(int(at_ms)),
            str(trigger),
            str(reason),
            str(message_id),
            int(version),
        )
        for segment_id, subject, pid, change, seq, at_ms, trigger, reason, message_id, version in rows
    ]
    changes.reverse()
    return PersonSegments(canonical, ids, current, tuple(changes))
