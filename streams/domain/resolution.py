"""The pure steps of streaming identity resolution (docs/identity.md, "Streaming design").

- :class:`FastExtractor`: ``IdentityRules.extract`` over the raw field values of a decoded record, so the
  resolver never builds a pydantic ``Event`` (tens of µs). ``tests/unit/wire/test_identity_stream.py``
  proves it equal to ``rules.extract(Event.from_avro(record))`` on random events.
- :func:`fast_person`: the fast-path decision. An event whose identifiers are all known and all owned by
  one person needs no link: ``IdentityGraph.link`` would change nothing (guarantee 6).
- :class:`LinkState`: the link writer's state (graph, identifier first-seen times, merge lineage) and
  its step ``apply(event) -> LinkResult``: the records to publish, as plain dicts in a fixed order. It
  is a pure function of the state and the event, so a replay from the same state republishes exactly
  the same records (the writer's recovery relies on that).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.domain.identifiers import (
    ExtractedIds,
    Identifier,
    IdKind,
    Normaliser,
    RejectedValue,
    RejectReason,
)
from streams.domain.identity import (
    GraphStorage,
    IdentityGraph,
    IdentityRules,
    MemoryGraphStorage,
    Merged,
    PersonRecord,
    Rejected,
)
from streams.domain.privacy import erased_change_id, suppression_key

# Fixed forever: change ids are derived from it, and readers deduplicate by change id.
CHANGE_NAMESPACE = uuid.UUID("8e3f6a52-0c1d-5b7e-9a44-6964656e7479")

# The Event model refuses identifier fields longer than this; the fast path refuses them too.
MAX_ID_LENGTH = 256

# Order of the raw values handed to FastExtractor.extract (the order of domain.identifiers.extract).
RAW_FIELDS: tuple[str, ...] = (
    "userId",
    "identifiers.crmId",
    "identifiers.email",
    "identifiers.loyaltyCard",
    "identifiers.phone",
    "identifiers.espSubscriberId",
    "context.device.id",
    "context.device.advertisingId",
    "anonymousId",
    "previousId",
)
# Fields the Event model turns from blank text into None before extraction (its ``_id_or_none``).
_BLANK_IS_NONE = (True, True, True, True, True, True, False, False, True, True)
_CACHE_MAX = 262_144

RawIds = Sequence[str | None]


class FastExtractor:
    """``rules.extract`` for raw values in :data:`RAW_FIELDS` order; memoises normalisation (pure)."""

    __slots__ = ("_cache", "_enabled", "_kinds", "_normaliser")

    def __init__(self, rules: IdentityRules) -> None:
        self._normaliser: Normaliser = rules.normalisation.normaliser()
        self._enabled = frozenset(rules.kinds())
        self._kinds: tuple[IdKind, ...] = (
            IdKind.CUSTOMER_ID,
            IdKind.CRM_ID,
            IdKind.EMAIL,
            IdKind.LOYALTY_CARD,
            IdKind.PHONE,
            IdKind.ESP_SUBSCRIBER_ID,
            IdKind.DEVICE_ID,
            IdKind.ADVERTISING_ID,
            IdKind.ANONYMOUS_ID,
            rules.normalisation.alias_previous_id_kind,
        )
        self._cache: dict[tuple[IdKind, str], Identifier | RejectedValue] = {}

    def extract(self, values: RawIds, ad_tracking_enabled: bool | None) -> ExtractedIds:
        """The event's identifiers and rejected raw values, exactly as ``rules.extract`` gives them."""
        found: list[Identifier] = []
        rejected: list[RejectedValue] = []
        enabled, cache = self._enabled, self._cache
        for kind, value, blank_is_none in zip(self._kinds, values, _BLANK_IS_NONE, strict=True):
            if value is None or (blank_is_none and not value.strip()):
                continue
            if kind not in enabled:
                rejected.append(
                    RejectedValue(kind, value, RejectReason.DISABLED, "kind not in the identity rules")
                )
                continue
            if kind is IdKind.ADVERTISING_ID and ad_tracking_enabled is False:
                rejected.append(
                    RejectedValue(
                        kind, value, RejectReason.AD_TRACKING_DISABLED, "device.adTrackingEnabled is false"
                    )
                )
                continue
            result = cache.get((kind, value))
            if result is None:
                if len(value) > MAX_ID_LENGTH:
                    result = RejectedValue(
                        kind, value, RejectReason.INVALID, f"longer than {MAX_ID_LENGTH} characters"
                    )
                else:
                    result = self._normaliser.normalise(kind, value)
                if len(cache) >= _CACHE_MAX:
                    cache.clear()
                cache[(kind, value)] = result
            if isinstance(result, Identifier):
                if result not in found:
                    found.append(result)
            else:
                rejected.append(result)
        return ExtractedIds(tuple(found), tuple(rejected))


def fast_person(keys: Sequence[str], owners: Mapping[str, str]) -> str | None:
    """The one person owning every key, or None (a key is unknown, or the keys span persons).

    A stale ``owners`` is safe: identifiers only move by merges, which move a whole person, so keys
    that shared an owner once share one for ever, and the owner seen maps to today's by ``canonical``.
    """
    if not keys:
        return None
    person = owners.get(keys[0])
    if person is None:
        return None
    for key in keys[1:]:
        if owners.get(key) != person:
            return None
    return person


def merge_change_id(merged_person: str) -> str:
    """A person is merged at most once, so its id names the merge."""
    return str(uuid.uuid5(CHANGE_NAMESPACE, "merged:" + merged_person))


def rejection_change_id(message_id: str, identifier_key: str, reason: str) -> str:
    return str(uuid.uuid5(CHANGE_NAMESPACE, f"rejected:{message_id}:{identifier_key}:{reason}"))


@dataclass
class LinkResult:
    """What one linked event publishes. Lists are in a fixed order (replays must match)."""

    person_id: str
    identifiers: list[str]
    changes: list[dict[str, Any]] = field(default_factory=list)
    assignments: list[dict[str, Any]] = field(default_factory=list)
    persons: list[dict[str, Any]] = field(default_factory=list)


class LinkStorage(GraphStorage, Protocol):
    """The link writer's tables: the graph's, identifier key -> first seen ms, live person id -> the
    merged ids it stands for (see :class:`LinkState`)."""

    @property
    def first_seen(self) -> MutableMapping[str, int]: ...

    @property
    def lineage(self) -> MutableMapping[str, list[str]]: ...


class MemoryLinkStorage(MemoryGraphStorage):
    """The link writer's tables as plain dicts."""

    __slots__ = ("first_seen", "lineage")

    def __init__(self) -> None:
        super().__init__()
        self.first_seen: dict[str, int] = {}
        self.lineage: dict[str, list[str]] = {}


class LinkState:
    """The single link writer's state: the graph, first-seen time per identifier, merge lineage.

    ``lineage`` maps a live person to every merged person id whose canonical person it is, so a merge
    record can list all ids a reader must now fold into the survivor (``mergedPersonIds``).
    """

    __slots__ = ("first_seen", "graph", "lineage")

    def __init__(
        self,
        graph: IdentityGraph,
        first_seen: MutableMapping[str, int] | None = None,
        lineage: MutableMapping[str, list[str]] | None = None,
    ) -> None:
        self.graph = graph
        self.first_seen: MutableMapping[str, int] = first_seen if first_seen is not None else {}
        self.lineage: MutableMapping[str, list[str]] = lineage if lineage is not None else {}

    @classmethod
    def on(cls, storage: LinkStorage, rules: IdentityRules) -> LinkState:
        """The state whose tables are ``storage`` (as they are: empty, or as stored before)."""
        return cls(IdentityGraph(rules, storage), storage.first_seen, storage.lineage)

    @classmethod
    def from_records(
        cls,
        assignments: Mapping[str, tuple[str, int]],
        persons: Mapping[str, PersonRecord],
        rules: IdentityRules,
        storage: LinkStorage | None = None,
    ) -> LinkState:
        """Rebuild from published records: identifier key -> (person id, first seen ms), person records,
        into ``storage`` (empty; in memory when None).

        Raises ``IdentityStateError`` when the records are inconsistent.
        """
        storage = storage if storage is not None else MemoryLinkStorage()
        graph = IdentityGraph.from_records({k: v[0] for k, v in assignments.items()}, persons, rules, storage)
        lineage = storage.lineage
        for pid, record in persons.items():
            if record.merged_into is not None:
                live = graph.canonical(pid)
                lineage[live] = [*lineage.get(live, ()), pid]
        first_seen = storage.first_seen
        for key, (_, first) in assignments.items():
            first_seen[key] = first
        return cls(graph, first_seen, lineage)

    def apply(
        self,
        identifiers: Sequence[Identifier],
        seen_at_ms: int,
        message_id: str,
        channel: str | None,
        version: int,
    ) -> LinkResult:
        """Link one event; returns the records to publish (``version`` is its position in the link log).

        Raises ``NoUsableIdentifierError`` when no identifier has a kind the rules use.
        """
        graph = self.graph
        resolution = graph.link(identifiers, seen_at_ms, message_id)
        person = resolution.person_id
        first_seen = self.first_seen
        result = LinkResult(person, [i.key for i in identifiers if graph.person_of(i) == person])
        if not resolution.outcomes:
            return result
        for outcome in resolution.outcomes:
            if isinstance(outcome, Merged):
                result.changes.append(self._merged(outcome, message_id, channel))
            elif isinstance(outcome, Rejected):
                result.changes.append(_rejected(outcome, message_id, channel, seen_at_ms))
        changed = graph.drain_changes()
        for key in sorted(changed.identifiers):
            first_seen.setdefault(key, seen_at_ms)
            result.assignments.append(
                {
                    "identifier": key,
                    "kind": key[: key.index(":")],
                    "personId": changed.identifiers[key],
                    "version": version,
                    "firstSeen": first_seen[key],
                    "at": seen_at_ms,
                }
            )
        for pid in sorted(changed.persons):
            record = changed.persons[pid]
            result.persons.append(person_record(pid, record, seen_at_ms))
        return result

    def erase(self, person_id: str, request_id: str, at_ms: int, suppress: bool) -> ErasureResult:
        """Erase the person ``person_id`` is now (with every id merged into it) from the graph.

        An id the graph does not know (never seen, or erased before) still gets its ``erased`` change, so
        a repeated request makes every reader forget the id again."""
        graph = self.graph
        try:
            live = graph.canonical(person_id)
        except KeyError:
            live, merged, keys = person_id, [], []
        else:
            merged = self.lineage.pop(live, [])
            keys = graph.forget(live, merged)
            for key in keys:
                self.first_seen.pop(key, None)
        ids = sorted({live, *merged})
        changes = [
            {
                "changeId": erased_change_id(request_id, pid),
                "kind": "erased",
                "personId": pid,
                "mergedPersonId": None,
                "mergedPersonIds": ids,
                "identifiers": [],
                "conflictingPersonId": None,
                "reason": f"erasure request {request_id}",
                "messageId": request_id,
                "channel": None,
                "at": at_ms,
            }
            for pid in ids
        ]
        suppressions = [(suppression_key(key), key[: key.index(":")]) for key in keys] if suppress else []
        return ErasureResult(ids, keys, changes, suppressions)

    def _merged(self, merged: Merged, message_id: str, channel: str | None) -> dict[str, Any]:
        lineage = self.lineage
        folded = [merged.merged, *lineage.pop(merged.merged, ())]
        lineage[merged.survivor] = [*lineage.get(merged.survivor, ()), *folded]
        return {
            "changeId": merge_change_id(merged.merged),
            "kind": "merged",
            "personId": merged.survivor,
            "mergedPersonId": merged.merged,
            "mergedPersonIds": sorted(folded),  # sorted: a rebuilt lineage lists them in another order
            "identifiers": list(merged.identifiers_moved),
            "conflictingPersonId": None,
            "reason": None,
            "messageId": message_id,
            "channel": channel,
            "at": merged.at_ms,
        }


@dataclass
class ErasureResult:
    """What an erasure publishes: tombstones for the identifiers and person ids, one ``erased`` identity
    change per person id (keyed by it, so each id's owner forgets it), and the suppressions."""

    person_ids: list[str]
    identifiers: list[str]
    changes: list[dict[str, Any]]
    suppressions: list[tuple[str, str]]  # (suppression key, identifier kind)


def _rejected(rejected: Rejected, message_id: str, channel: str | None, at_ms: int) -> dict[str, Any]:
    key = rejected.identifier.key
    reason = f"{rejected.reason.value}:{rejected.limit_kind.value}"
    return {
        "changeId": rejection_change_id(message_id, key, reason),
        "kind": "rejected",
        "personId": rejected.person_id,
        "mergedPersonId": None,
        "mergedPersonIds": [],
        "identifiers": [key],
        "conflictingPersonId": rejected.conflicting_person,
        "reason": reason,
        "messageId": message_id,
        "channel": channel,
        "at": at_ms,
    }


def person_record(person_id: str, record: PersonRecord, at_ms: int) -> dict[str, Any]:
    """The ``identity.persons`` record of one person."""
    return {
        "personId": person_id,
        "firstSeen": record.first_seen_ms,
        "mergedInto": record.merged_into,
        "at": at_ms,
    }


def invalid_reason(rejected: Iterable[RejectedValue]) -> str:
    """Why an event has no usable identifier, for ``events.invalid``."""
    parts = [f"{r.kind.value} {r.reason.value} ({r.detail})" for r in rejected]
    return "no usable identifier: " + ("; ".join(parts) if parts else "the event carries none")
