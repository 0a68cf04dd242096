"""Identity resolution: the rules, and the incremental identity graph that applies them.

The policy of ``IdentityGraph.link`` (docs/identity.md explains why, and the property tests in
``tests/unit/domain/test_identity_properties.py`` check it against a naive reference model):

1. The event's identifiers are ordered by rule priority, then by key. Let ``h`` be the first.
2. The anchor is ``h``'s person. If ``h`` is unknown, it is the person of the highest-priority known
   identifier when that person still has room for ``h``'s kind, else a new person seeded by ``h``.
   So the event's person always contains ``h``.
3. Every other identifier, in order: unknown -> attached to the anchor if the anchor has room for its
   kind, else rejected (``limit``). Known to another person ``P`` -> ``P`` and the anchor merge if the
   union of their identifiers keeps every per-type limit, else the link is rejected (``merge_limit``)
   and ``P`` keeps the identifier.
4. A merge keeps the older person: the smaller ``(first_seen_ms, person_id)``. The other one gets a
   ``merged_into`` pointer and never becomes live again.

Person ids are ``uuid5(PERSON_NAMESPACE, seed_key)``. A seed is unknown when it seeds a person and
known forever after, so no id is issued twice, and a replay of the same ordered input issues the same
ids and the same merges.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.domain.events import Event
from streams.domain.identifiers import ExtractedIds, Identifier, IdKind, NormalisationRules, extract

# Fixed forever: changing it changes every person id ever issued.
PERSON_NAMESPACE = uuid.UUID("5d0c5f3e-4b7a-5a43-9f0e-6f6d6e697365")


class IdentityRulesError(ValueError):
    """The identity rules file is unreadable or invalid; the message names the file and the field."""


class IdentityStateError(ValueError):
    """Persisted identity records are inconsistent; the message names the offending key."""


class NoUsableIdentifierError(ValueError):
    """``link`` got no identifier of a kind the rules use."""


class TypeRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: IdKind
    limit: int | None = Field(default=None, ge=1, description="Most identifiers of this kind per person.")


DEFAULT_TYPE_RULES: tuple[TypeRule, ...] = (
    TypeRule(kind=IdKind.CUSTOMER_ID, limit=1),
    TypeRule(kind=IdKind.CRM_ID, limit=1),
    TypeRule(kind=IdKind.EMAIL, limit=5),
    TypeRule(kind=IdKind.LOYALTY_CARD, limit=2),
    TypeRule(kind=IdKind.PHONE, limit=3),
    TypeRule(kind=IdKind.ESP_SUBSCRIBER_ID, limit=5),
    TypeRule(kind=IdKind.DEVICE_ID, limit=10),
    TypeRule(kind=IdKind.ADVERTISING_ID, limit=10),
    TypeRule(kind=IdKind.ANONYMOUS_ID, limit=None),
)


class IdentityRules(BaseModel):
    """Identifier kinds in priority order (highest first) with per-person limits, plus normalisation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identifier_types: tuple[TypeRule, ...] = DEFAULT_TYPE_RULES
    normalisation: NormalisationRules = NormalisationRules()

    @field_validator("identifier_types")
    @classmethod
    def _unique_kinds(cls, rules: tuple[TypeRule, ...]) -> tuple[TypeRule, ...]:
        if not rules:
            raise ValueError("list at least one identifier kind")
        seen: set[IdKind] = set()
        for rule in rules:
            if rule.kind in seen:
                raise ValueError(f"kind {rule.kind.value!r} is listed twice; each kind has one priority")
            seen.add(rule.kind)
        return rules

    @classmethod
    def from_mapping(cls, data: Any, source: str = "identity rules") -> IdentityRules:
        """Validate a parsed YAML/JSON document; errors name ``source`` and the field path."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise IdentityRulesError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise IdentityRulesError(f"{source}: {problems}") from exc

    @classmethod
    def from_yaml(cls, path: str | Path) -> IdentityRules:
        """Load rules from a YAML file such as ``deploy/identity.yaml``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise IdentityRulesError(f"{path}: cannot read identity rules: {exc}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise IdentityRulesError(f"{path}: not valid YAML: {exc}") from exc
        return cls.from_mapping(data, source=str(path))

    def kinds(self) -> tuple[IdKind, ...]:
        return tuple(rule.kind for rule in self.identifier_types)

    @cached_property
    def _enabled(self) -> frozenset[IdKind]:
        return frozenset(self.kinds())

    def extract(self, event: Event) -> ExtractedIds:
        """The event's identifiers under these rules (kinds not listed come back rejected)."""
        return extract(event, self.normalisation, self._enabled)


class PersonRecord(NamedTuple):
    """The persisted person: when it was first seen, and the survivor it was merged into (if any)."""

    first_seen_ms: int
    merged_into: str | None = None


class LinkRejection(StrEnum):
    LIMIT = "limit"
    MERGE_LIMIT = "merge_limit"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class Created:
    person_id: str
    seed: Identifier
    first_seen_ms: int


@dataclass(frozen=True, slots=True)
class Attached:
    person_id: str
    identifier: Identifier


@dataclass(frozen=True, slots=True)
class Merged:
    survivor: str
    merged: str
    identifiers_moved: tuple[str, ...]
    event_id: str | None
    at_ms: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A link left out. ``limit_kind`` is the kind whose limit it would break."""

    identifier: Identifier
    person_id: str
    reason: LinkRejection
    conflicting_person: str | None
    limit_kind: IdKind


Outcome = Created | Attached | Merged | Rejected


@dataclass(frozen=True, slots=True)
class Resolution:
    """The person an event belongs to and what linking it did, in order."""

    person_id: str
    outcomes: tuple[Outcome, ...] = ()

    @property
    def changed(self) -> bool:
        return any(not isinstance(outcome, Rejected) for outcome in self.outcomes)

    @property
    def merges(self) -> tuple[Merged, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Merged))

    @property
    def rejections(self) -> tuple[Rejected, ...]:
        return tuple(o for o in self.outcomes if isinstance(o, Rejected))

    @property
    def attached(self) -> tuple[Identifier, ...]:
        return tuple(o.identifier for o in self.outcomes if isinstance(o, Attached))


@dataclass(frozen=True, slots=True)
class GraphChanges:
    """Changed keys since the last drain: identifier key -> person id, person id -> record."""

    identifiers: dict[str, str]
    persons: dict[str, PersonRecord]

    def __bool__(self) -> bool:
        return bool(self.identifiers or self.persons)


class GraphStorage(Protocol):
    """Where an :class:`IdentityGraph` keeps its tables: identifier key -> live person id, live person
    id -> its identifier keys, person id -> ``PersonRecord`` (live and merged).

    The graph reads and writes them as mappings and writes a members list back whenever it changed it,
    so an implementation may keep them anywhere (``MemoryGraphStorage`` here; RocksDB with a bounded
    cache in ``streams.state.identifiers``).
    """

    @property
    def owner(self) -> MutableMapping[str, str]: ...

    @property
    def members(self) -> MutableMapping[str, list[str]]: ...

    @property
    def persons(self) -> MutableMapping[str, PersonRecord]: ...


class MemoryGraphStorage:
    """The graph's tables as plain dicts: every identifier in memory."""

    __slots__ = ("members", "owner", "persons")

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}
        self.members: dict[str, list[str]] = {}
        self.persons: dict[str, PersonRecord] = {}


def person_id_for(seed: Identifier) -> str:
    """The deterministic id of the person seeded by ``seed``."""
    return str(uuid.uuid5(PERSON_NAMESPACE, seed.key))


class IdentityGraph:
    """Each identifier belongs to exactly one live person; persons are the components of accepted links.

    State is three tables (:class:`GraphStorage`): identifier key -> live person id, live person id ->
    its identifier keys, and person id -> ``PersonRecord`` (live and merged). In memory (the default),
    person id strings are shared objects, so an identifier costs its key, one dict slot and one list slot.
    """

    __slots__ = (
        "_dirty_ids",
        "_dirty_persons",
        "_limit",
        "_members",
        "_owner",
        "_persons",
        "_rank",
        "rules",
        "storage",
    )

    def __init__(self, rules: IdentityRules | None = None, storage: GraphStorage | None = None) -> None:
        self.rules = rules if rules is not None else IdentityRules()
        self._rank: dict[str, int] = {rule.kind: i for i, rule in enumerate(self.rules.identifier_types)}
        self._limit: dict[str, int | None] = {rule.kind: rule.limit for rule in self.rules.identifier_types}
        self.storage: GraphStorage = storage if storage is not None else MemoryGraphStorage()
        self._owner = self.storage.owner
        self._members = self.storage.members
        self._persons = self.storage.persons
        self._dirty_ids: set[str] = set()
        self._dirty_persons: set[str] = set()

    # -- queries ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._owner)

    @property
    def person_count(self) -> int:
        return len(self._members)

    def person_of(self, identifier: Identifier) -> str | None:
        return self._owner.get(identifier.key)

    def identifiers_of(self, person_id: str) -> tuple[Identifier, ...]:
        """The live person's identifiers, by priority then key (``()`` for unknown or merged ids)."""
        keys = self._members.get(person_id, ())
        return tuple(self._sorted([Identifier.from_key(key) for key in keys]))

    def record(self, person_id: str) -> PersonRecord | None:
        return self._persons.get(person_id)

    def canonical(self, person_id: str) -> str:
        """The live person that ``person_id`` is now (itself, or its survivor through merges)."""
        persons = self._persons
        current = person_id
        for _ in range(len(persons) + 1):
            record = persons.get(current)
            if record is None:
                raise KeyError(f"unknown person id {person_id!r}")
            if record.merged_into is None:
                return current
            current = record.merged_into
        raise IdentityStateError(f"person {person_id}: merged_into pointers form a cycle")

    def records(self) -> tuple[dict[str, str], dict[str, PersonRecord]]:
        """A full copy of the state as records (what ``drain_changes`` emits incrementally)."""
        return dict(self._owner), dict(self._persons)

    def drain_changes(self) -> GraphChanges:
        """The records changed since the last drain, then forget them (write these to the changelog)."""
        owner, persons = self._owner, self._persons
        changes = GraphChanges(
            {key: owner[key] for key in self._dirty_ids}, {pid: persons[pid] for pid in self._dirty_persons}
        )
        self._dirty_ids = set()
        self._dirty_persons = set()
        return changes

    # -- erasure ------------------------------------------------------------------------------------

    def forget(self, live: str, merged: Iterable[str]) -> list[str]:
        """Remove the live person ``live``, the ids ``merged`` into it and its identifiers (an erasure);
        returns the identifier keys removed, sorted. The other persons are untouched: a person is a
        connected component, so no other person links to these identifiers."""
        record = self._persons.get(live)
        if record is None or record.merged_into is not None:
            raise KeyError(f"{live!r} is not a live person")
        keys = self._members.pop(live)
        owner = self._owner
        for key in keys:
            del owner[key]
        self._dirty_ids.difference_update(keys)
        for pid in (live, *merged):
            self._persons.pop(pid, None)
            self._dirty_persons.discard(pid)
        return sorted(keys)

    # -- linking ------------------------------------------------------------------------------------

    def link_event(self, event: Event, seen_at_ms: int) -> tuple[ExtractedIds, Resolution]:
        """Extract the event's identifiers with the graph's rules and link them."""
        extracted = self.rules.extract(event)
        return extracted, self.link(extracted.identifiers, seen_at_ms, event.messageId)

    def link(
        self, identifiers: Sequence[Identifier], seen_at_ms: int, event_id: str | None = None
    ) -> Resolution:
        """Put the event's identifiers in one person where the rules allow (see the module docstring).

        Raises ``NoUsableIdentifierError`` when no identifier has a kind the rules use.
        """
        owner, rank = self._owner, self._rank
        if len(identifiers) == 1:
            ident = identifiers[0]
            pid = owner.get(ident.key)
            if pid is not None and ident.kind in rank:
                return Resolution(pid)
        outcomes: list[Outcome] = []
        keyed: dict[str, Identifier] = {}
        disabled: list[Identifier] = []
        for ident in identifiers:
            if ident.kind in rank:
                keyed[ident.key] = ident
            elif ident not in disabled:
                disabled.append(ident)
        if not keyed:
            raise NoUsableIdentifierError(
                "no identifier of a kind the identity rules use "
                f"(got {', '.join(i.kind.value for i in identifiers) or 'none'})"
            )
        order = sorted(keyed, key=lambda k: (rank[keyed[k].kind], k))
        first = order[0]
        anchor = owner.get(first)
        if anchor is None or any(owner.get(key) != anchor for key in order):
            anchor = self._link_all(order, keyed, anchor, seen_at_ms, event_id, outcomes)
        for ident in disabled:
            outcomes.append(Rejected(ident, anchor, LinkRejection.DISABLED, None, ident.kind))
        return Resolution(anchor, self._settle(outcomes, anchor))

    def _link_all(
        self,
        order: list[str],
        keyed: dict[str, Identifier],
        anchor: str | None,
        seen_at_ms: int,
        event_id: str | None,
        outcomes: list[Outcome],
    ) -> str:
        owner = self._owner
        if anchor is None:
            seed = keyed[order[0]]
            known = next((owner[key] for key in order if key in owner), None)
            if known is not None and self._has_room(known, seed.kind):
                anchor = known
            else:
                anchor = self._create(seed, seen_at_ms, outcomes)
        for key in order:
            pid = owner.get(key)
            if pid == anchor:
                continue
            ident = keyed[key]
            if pid is None:
                if self._has_room(anchor, ident.kind):
                    self._attach(anchor, key)
                    outcomes.append(Attached(anchor, ident))
                else:
                    outcomes.append(Rejected(ident, anchor, LinkRejection.LIMIT, None, ident.kind))
                continue
            blocker = self._merge_blocker(anchor, pid)
            if blocker is not None:
                outcomes.append(Rejected(ident, anchor, LinkRejection.MERGE_LIMIT, pid, blocker))
            else:
                anchor = self._merge(anchor, pid, seen_at_ms, event_id, outcomes)
        return anchor

    @staticmethod
    def _settle(outcomes: list[Outcome], person_id: str) -> tuple[Outcome, ...]:
        # A rejection names the event's final person, even if a later merge in the same event moved it.
        return tuple(
            dataclasses.replace(o, person_id=person_id)
            if isinstance(o, Rejected) and o.person_id != person_id
            else o
            for o in outcomes
        )

    def _create(self, seed: Identifier, seen_at_ms: int, outcomes: list[Outcome]) -> str:
        key = seed.key
        pid = person_id_for(seed)
        if pid in self._persons:  # only possible with a uuid5 collision or corrupted records
            raise IdentityStateError(f"person id {pid} for new seed {key!r} already exists")
        self._persons[pid] = PersonRecord(seen_at_ms, None)
        self._members[pid] = [key]
        self._owner[key] = pid
        self._dirty_ids.add(key)
        self._dirty_persons.add(pid)
        outcomes.append(Created(pid, seed, seen_at_ms))
        return pid

    def _attach(self, pid: str, key: str) -> None:
        self._owner[key] = pid
        members = self._members[pid]
        members.append(key)
        self._members[pid] = members  # written back: a stored table sees the change
        self._dirty_ids.add(key)

    def _has_room(self, pid: str, kind: IdKind) -> bool:
        limit = self._limit[kind]
        if limit is None:
            return True
        prefix = kind + ":"
        count = 0
        for key in self._members[pid]:
            if key.startswith(prefix):
                count += 1
                if count >= limit:
                    return False
        return True

    def _merge_blocker(self, a: str, b: str) -> IdKind | None:
        """The highest-priority kind whose limit the union of ``a`` and ``b`` would break, if any."""
        limits = self._limit
        counts: dict[str, int] = {}
        for members in (self._members[a], self._members[b]):
            for key in members:
                kind = key[: key.index(":")]
                if limits.get(kind) is not None:
                    counts[kind] = counts.get(kind, 0) + 1
        for rule in self.rules.identifier_types:
            if rule.limit is not None and counts.get(rule.kind, 0) > rule.limit:
                return rule.kind
        return None

    def _merge(self, a: str, b: str, at_ms: int, event_id: str | None, outcomes: list[Outcome]) -> str:
        persons = self._persons
        ra, rb = persons[a], persons[b]
        # Older person survives; the id breaks ties so the choice never depends on argument order.
        survivor, loser = (a, b) if (ra.first_seen_ms, a) <= (rb.first_seen_ms, b) else (b, a)
        moved = self._members.pop(loser)
        owner = self._owner
        for key in moved:
            owner[key] = survivor
        members = self._members[survivor]
        members.extend(moved)
        self._members[survivor] = members
        self._dirty_ids.update(moved)
        persons[loser] = PersonRecord(persons[loser].first_seen_ms, survivor)
        self._dirty_persons.add(loser)
        outcomes.append(Merged(survivor, loser, tuple(sorted(moved)), event_id, at_ms))
        return survivor

    def _sorted(self, identifiers: Iterable[Identifier]) -> list[Identifier]:
        rank = self._rank
        return sorted(identifiers, key=lambda i: (rank.get(i.kind, len(rank)), i.key))

    # -- persistence --------------------------------------------------------------------------------

    @classmethod
    def from_records(
        cls,
        identifiers: Mapping[str, str],
        persons: Mapping[str, PersonRecord | Sequence[Any]],
        rules: IdentityRules | None = None,
        storage: GraphStorage | None = None,
    ) -> IdentityGraph:
        """Rebuild a graph from its records (e.g. the changelog tables) into ``storage`` (empty; in memory
        when None); raises ``IdentityStateError``."""
        graph = cls(rules, storage)
        interned: dict[str, str] = {}
        for pid, raw in persons.items():
            try:
                first_seen, merged_into = raw[0], raw[1]
                if not isinstance(first_seen, int) or not (
                    merged_into is None or isinstance(merged_into, str)
                ):
                    raise TypeError("expected (int first_seen_ms, str | None merged_into)")
            except (IndexError, TypeError, KeyError) as exc:
                raise IdentityStateError(f"person {pid!r}: bad record {raw!r}: {exc}") from exc
            interned[pid] = pid
            graph._persons[pid] = PersonRecord(first_seen, merged_into)
            if merged_into is None:
                graph._members[pid] = []
        for pid, record in graph._persons.items():
            if record.merged_into is not None and record.merged_into not in interned:
                raise IdentityStateError(f"person {pid!r}: merged_into {record.merged_into!r} is unknown")
        kinds = frozenset(kind.value for kind in IdKind)
        for key, pid in identifiers.items():
            kind, _, value = key.partition(":")
            if kind not in kinds or not value:
                raise IdentityStateError(
                    f"identifier key {key!r}: expected '<kind>:<value>' with a known kind"
                )
            members = graph._members.get(pid)
            if members is None:
                state = "merged" if pid in interned else "unknown"
                raise IdentityStateError(f"identifier {key!r}: points at {state} person {pid!r}")
            members.append(key)
            graph._members[pid] = members
            graph._owner[key] = interned[pid]
        for pid, members in graph._members.items():
            if not members:
                raise IdentityStateError(f"person {pid!r}: live but has no identifiers")
        for pid in graph._persons:
            graph.canonical(pid)  # raises on a merged_into cycle
        return graph
