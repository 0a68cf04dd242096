"""The single customer view of one person: parsing the identifier asked for, and the assembled view.

Pure: the warehouse (``streams/warehouse/persons.py``) fills :class:`PersonView` from ClickHouse; the CLI
renders it as text and the HTTP API as JSON (:meth:`PersonView.to_dict`).

Three clocks appear in a view, and every time says which it is (:data:`TIME_BASIS`): event time (when
the person did it: the event's timestamp), received time (when omniseg received the event that showed
an identifier or caused a merge) and evaluation time (when the segment stage decided a membership).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.domain.identifiers import Identifier, IdKind, Normaliser, RejectedValue

_EVENT_TIME = "event time: when it happened (the event's timestamp)"
_RECEIVED_TIME = "received time: when omniseg received the event that showed it"
TIME_BASIS: dict[str, str] = {
    "first_seen": _EVENT_TIME,
    "last_seen": _EVENT_TIME,
    "channels": _EVENT_TIME,
    "recent_events": _EVENT_TIME,
    "identifiers.first_seen": _RECEIVED_TIME,
    "merges.at": _RECEIVED_TIME,
    "rejections.at": _RECEIVED_TIME,
    "segments.since": "evaluation time: when the segment stage put the person in",
}

_KIND_NAMES = frozenset(kind.value for kind in IdKind)
KINDS = ", ".join(kind.value for kind in IdKind)


class IdentifierQueryError(ValueError):
    """The identifier asked for cannot be used; the message says why and how to ask."""


def parse_identifier(text: str, kind: str | None, normaliser: Normaliser) -> Identifier:
    """The normalised identifier for ``text``: a raw value with ``kind``, or ``kind:value``.

    Without a kind, a value containing ``@`` is taken as an email. Raises :class:`IdentifierQueryError`.
    """
    if kind is not None:
        try:
            id_kind = IdKind(kind.strip().lower())
        except ValueError:
            raise IdentifierQueryError(f"unknown identifier kind {kind!r}; use one of: {KINDS}") from None
        raw = text
    else:
        prefix, sep, rest = text.strip().partition(":")
        if sep and prefix.lower() in _KIND_NAMES:
            id_kind, raw = IdKind(prefix.lower()), rest
        elif "@" in text:
            id_kind, raw = IdKind.EMAIL, text
        else:
            raise IdentifierQueryError(
                f"cannot tell the kind of {text!r}: pass a kind (--kind / kind=) or write it as "
                f"kind:value, e.g. customer_id:{text.strip()}; kinds: {KINDS}"
            )
    result = normaliser.normalise(id_kind, raw)
    if isinstance(result, RejectedValue):
        raise IdentifierQueryError(
            f"{id_kind.value} {raw!r} is not a usable identifier ({result.reason.value}: {result.detail})"
        )
    return result


@dataclass(frozen=True, slots=True)
class PersonIdentifier:
    identifier: str  # kind:value
    kind: str
    value: str
    first_seen: datetime
    version: int
    assigned_person_id: str  # owner named by the newest assignment (maybe merged since)


@dataclass(frozen=True, slots=True)
class MergeRecord:
    change_id: str
    survivor: str
    merged: str
    merged_person_ids: tuple[str, ...]
    identifiers: tuple[str, ...]
    message_id: str
    channel: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RejectionRecord:
    change_id: str
    person_id: str
    identifier: str
    conflicting_person_id: str
    reason: str
    message_id: str
    channel: str
    at: datetime


@dataclass(frozen=True, slots=True)
class ChannelActivity:
    channel: str
    events: int
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class PersonEvent:
    message_id: str
    channel: str
    type: str
    event: str
    name: str
    timestamp: datetime
    resolved_person_id: str
    revenue: float
    currency: str


@dataclass(frozen=True, slots=True)
class CurrentSegment:
    """A segment (or, with a subject such as ``product:P1``, a suppression audience) the person is in."""

    segment_id: str
    subject: str
    since: datetime


@dataclass(frozen=True, slots=True)
class PersonView:
    """Everything known about one canonical person, found through one of its identifiers."""

    looked_up: str  # the normalised identifier key that was asked for
    person_id: str  # canonical (live) person
    person_ids: tuple[str, ...]  # the canonical id first, then every id merged into it
    identifiers: tuple[PersonIdentifier, ...]
    merges: tuple[MergeRecord, ...]
    rejections: tuple[RejectionRecord, ...]
    channels: tuple[ChannelActivity, ...]
    recent_events: tuple[PersonEvent, ...] = field(default=())
    segments: tuple[CurrentSegment, ...] = field(default=())

    @property
    def event_count(self) -> int:
        return sum(activity.events for activity in self.channels)

    @property
    def first_seen(self) -> datetime | None:
        """Its earliest event, in event time (None before its first event reached the warehouse)."""
        return min((a.first_seen for a in self.channels), default=None)

    @property
    def last_seen(self) -> datetime | None:
        """Its latest event, in event time."""
        return max((a.last_seen for a in self.channels), default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (times as ISO 8601 UTC)."""
        return {
            "looked_up": self.looked_up,
            "person_id": self.person_id,
            "merged_person_ids": list(self.person_ids[1:]),
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "event_count": self.event_count,
            "time_basis": dict(TIME_BASIS),
            "segments": [
                {"segment_id": m.segment_id, "subject": m.subject, "since": _iso(m.since)}
                for m in self.segments
            ],
            "channels": [
                {
                    "channel": a.channel,
                    "events": a.events,
                    "first_seen": _iso(a.first_seen),
                    "last_seen": _iso(a.last_seen),
                }
                for a in self.channels
            ],
            "identifiers": [
                {
                    "identifier": i.identifier,
                    "kind": i.kind,
                    "value": i.value,
                    "first_seen": _iso(i.first_seen),
                    "version": i.version,
                }
                for i in self.identifiers
            ],
            "merges": [
                {
                    "change_id": m.change_id,
                    "survivor": m.survivor,
                    "merged": m.merged,
                    "merged_person_ids": list(m.merged_person_ids),
                    "identifiers": list(m.identifiers),
                    "message_id": m.message_id,
                    "channel": m.channel,
                    "at": _iso(m.at),
                }
                for m in self.merges
            ],
            "rejections": [
                {
                    "change_id": r.change_id,
                    "person_id": r.person_id,
                    "identifier": r.identifier,
                    "conflicting_person_id": r.conflicting_person_id,
                    "reason": r.reason,
                    "message_id": r.message_id,
                    "channel": r.channel,
                    "at": _iso(r.at),
                }
                for r in self.rejections
            ],
            "recent_events": [
                {
                    "message_id": e.message_id,
                    "channel": e.channel,
                    "type": e.type,
                    "event": e.event,
                    "name": e.name,
                    "timestamp": _iso(e.timestamp),
                    "resolved_person_id": e.resolved_person_id,
                    "revenue": e.revenue,
                    "currency": e.currency,
                }
                for e in self.recent_events
            ],
        }

    def render(self) -> str:
        """A plain text report for terminals."""
        lines = [
            f"person     {self.person_id}",
            f"found by   {self.looked_up}",
            f"seen       {_iso(self.first_seen) or '-'} .. {_iso(self.last_seen) or '-'}, "
            f"{self.event_count} events (event time)",
        ]
        if len(self.person_ids) > 1:
            lines.append(f"merged ids {', '.join(self.person_ids[1:])}")
        lines.append("")
        lines.append(f"segments now ({len(self.segments)}; since = when the segment stage put them in)")
        lines += [
            f"  {m.segment_id + (' ' + m.subject if m.subject else ''):<50} since {_iso(m.since)}"
            for m in self.segments
        ]
        lines.append(f"channels ({len(self.channels)}; event time)")
        lines += [
            f"  {a.channel:<6} {a.events:>7} events  {_iso(a.first_seen)} .. {_iso(a.last_seen)}"
            for a in self.channels
        ]
        lines.append(f"identifiers ({len(self.identifiers)}; first received = when omniseg first got it)")
        lines += [f"  {i.identifier:<50} first received {_iso(i.first_seen)}" for i in self.identifiers]
        lines.append(f"merges ({len(self.merges)}; received time)")
        lines += [
            f"  {_iso(m.at)}  {m.merged} -> {m.survivor}  ({len(m.identifiers)} identifiers, "
            f"event {m.message_id})"
            for m in self.merges
        ]
        lines.append(f"rejected links ({len(self.rejections)}; received time)")
        lines += [
            f"  {_iso(r.at)}  {r.identifier} ({r.reason}; kept by {r.conflicting_person_id or '-'}, "
            f"event {r.message_id})"
            for r in self.rejections
        ]
        lines.append(f"recent events ({len(self.recent_events)} of {self.event_count}; event time)")
        lines += [
            f"  {_iso(e.timestamp)}  {e.channel:<6} {e.type:<8} {e.event or e.name or '-'}"
            + (f"  {e.revenue:.2f} {e.currency}".rstrip() if e.revenue else "")
            for e in self.recent_events
        ]
        return "\n".join(lines)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC; naive datetimes (ClickHouse DateTime in a UTC server) are taken as UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
