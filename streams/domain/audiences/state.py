"""The audiences of every destination, kept incrementally: ``AudienceState.apply(item) -> deltas``.

What a person contributes to an audience (``contribution``): when the person is a member of a segment
(and subject) the destination reads, and has granted every consent purpose the destination requires,
the hashes of the person's identifiers of the kinds the destination may receive, hashed for its
platform; otherwise nothing. A person in the control arm of a running use case contributes nothing to
the audiences drawn from the segment and subject the use case covers (``RunningUseCase.covers``): the
use case measures what showing them the ads changes, so its control persons are held out of every
destination's audience of its segment and subject, and nowhere else (treatment persons, and other
audiences, are unaffected). The arm is a pure function of (use case, person), so a replay decides the
same.

An audience is the union of its members' contributions. Two persons can contribute the same hash
(Google removes the dots of Gmail addresses, so ``jane.doe@gmail.com`` and ``janedoe@gmail.com`` of two
persons hash alike), so every hash keeps the set of persons contributing it and is removed only when the
last one goes: a person leaving must not take a hash out from under another member, or a buyer of the
blouse would see its ads again.

Invariants (property-tested against a from-scratch computation, tests/unit/domain/audiences):

- after any sequence of inputs, each audience equals the union of the persons' contributions under the
  configuration in force (its destinations, consent policy and running use cases): a configuration that
  starts a use case removes the hashes only its control persons gave, one that stops it adds them back;
- per (destination, audience, kind, hash) the deltas alternate add / remove, starting with an add, so
  folding the deltas of any prefix gives the audience after that prefix;
- ``apply`` is a pure function of the state and the input, and its deltas come in a deterministic
  order: a writer that replays its input after a crash republishes the same deltas.

The running use cases are looked up by (segment, subject) in a map built once per configuration
(:func:`covering`): with no use case running, or none covering a person's keys, a contribution costs
one emptiness check, or one dict lookup per key read.

Inputs are idempotent where the pipeline may repeat them: a membership change applies only when its
``seq`` is newer than the one held (segment changes are at least once), and a person update replaces
the person's identifiers and consent whole.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field

from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.destinations import Destination, audience_id
from streams.domain.audiences.hashing import AudienceIdKind, Platform, hashes
from streams.domain.consent import ConsentPolicy, Decision
from streams.domain.experiments.assignment import Covering, RunningUseCase, SegmentKey, covering

Member = tuple[AudienceIdKind, str]  # (kind, hash)
AudienceKey = tuple[str, str]  # (destination id, audience id)


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """A person entered (odd ``seq``) or exited (even ``seq``) a segment or a subject of an audience."""

    person_id: str
    segment_id: str
    subject: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class PersonUpdate:
    """The person's current identifiers (normalised, per kind) and consent decisions, whole."""

    person_id: str
    identifiers: Mapping[AudienceIdKind, tuple[str, ...]]
    consent: Mapping[str, Decision]


@dataclass(frozen=True, slots=True)
class PersonRemoved:
    """The person was merged into another one (or erased) and contributes nothing any more."""

    person_id: str


@dataclass(frozen=True, slots=True)
class Configuration:
    """The destinations, the consent policy and the running use cases in force from this point of the
    input on."""

    destinations: tuple[Destination, ...]
    policy: ConsentPolicy
    usecases: tuple[RunningUseCase, ...] = ()


AudienceInput = MembershipChange | PersonUpdate | PersonRemoved | Configuration


def read_segments(configuration: Configuration) -> frozenset[str]:
    """The segments some destination of ``configuration`` reads: memberships of others add nothing."""
    return frozenset(entry.segment for d in configuration.destinations for entry in d.audiences)


def held_out(person_id: str, usecases: tuple[RunningUseCase, ...] | None) -> bool:
    """Whether ``person_id`` is in the control arm of one of ``usecases`` (the ones covering a key)."""
    return usecases is not None and any(usecase.is_control(person_id) for usecase in usecases)


@dataclass(slots=True)
class PersonFacts:
    memberships: dict[SegmentKey, int] = field(default_factory=dict)  # key -> newest seq
    identifiers: Mapping[AudienceIdKind, tuple[str, ...]] = field(default_factory=dict)
    consent: Mapping[str, Decision] = field(default_factory=dict)

    def member_keys(self) -> list[SegmentKey]:
        return [key for key, seq in self.memberships.items() if seq % 2 == 1]


def contribution(
    person_id: str,
    facts: PersonFacts,
    destinations: Mapping[str, Destination],
    policy: ConsentPolicy,
    read: Container[str] | None = None,
    usecases: Covering | None = None,
) -> dict[AudienceKey, frozenset[Member]]:
    """What person ``person_id`` adds to each audience of ``destinations`` (audiences it adds nothing to
    are absent).

    ``read``: the segments any of the destinations reads, when known (memberships of others add
    nothing, so they are not looked at). ``usecases``: the running use cases by the key they cover
    (:func:`covering`); a key a use case has the person in control of adds nothing."""
    if not facts.identifiers:
        return {}
    keys = facts.member_keys()
    if read is not None:
        keys = [key for key in keys if key[0] in read]
    if usecases and keys:
        keys = [key for key in keys if not held_out(person_id, usecases.get(key))]
    if not keys:
        return {}
    result: dict[AudienceKey, frozenset[Member]] = {}
    for destination in destinations.values():
        if not policy.allows(facts.consent, destination.consent):
            continue
        hashed: frozenset[Member] | None = None
        for segment_id, subject in keys:
            if not destination.reads(segment_id, subject):
                continue
            if hashed is None:
                platform = Platform(destination.kind)
                hashed = frozenset(hashes(platform, facts.identifiers, destination.identifiers))
            if hashed:
                result[(destination.id, audience_id(segment_id, subject))] = hashed
    return result


class AudienceState:
    """Every destination's audiences and the facts of every person they are computed from."""

    def __init__(self, configuration: Configuration | None = None) -> None:
        self.destinations: dict[str, Destination] = {}
        self.policy = ConsentPolicy()
        self.read: frozenset[str] = frozenset()  # the segments any destination reads
        self.usecases: tuple[RunningUseCase, ...] = ()  # the running use cases
        self.covering: dict[SegmentKey, tuple[RunningUseCase, ...]] = {}  # covering(self.usecases)
        self.persons: dict[str, PersonFacts] = {}
        # audience -> member -> the persons contributing it (never empty: an empty set is deleted)
        self.members: dict[AudienceKey, dict[Member, set[str]]] = {}
        if configuration is not None:
            self.apply(configuration)

    def apply(self, item: AudienceInput) -> list[Delta]:
        if isinstance(item, Configuration):
            return self._configure(item)
        if isinstance(item, MembershipChange):
            facts = self.persons.get(item.person_id)
            key = (item.segment_id, item.subject)
            if facts is not None and facts.memberships.get(key, 0) >= item.seq:
                return []  # a repeat of a change already applied
            if item.segment_id not in self.read:
                # No destination reads this segment: no contribution changes (most changes).
                if facts is None:
                    facts = self.persons[item.person_id] = PersonFacts()
                facts.memberships[key] = item.seq
                return []
            before = self._contribution(item.person_id, facts)
            if facts is None:
                facts = self.persons[item.person_id] = PersonFacts()
            facts.memberships[key] = item.seq
        elif isinstance(item, PersonUpdate):
            facts = self.persons.get(item.person_id)
            before = self._contribution(item.person_id, facts)
            if facts is None:
                facts = self.persons[item.person_id] = PersonFacts()
            facts.identifiers = dict(item.identifiers)
            facts.consent = dict(item.consent)
        else:
            facts = self.persons.pop(item.person_id, None)
            return self._settle(item.person_id, self._contribution(item.person_id, facts), {})
        return self._settle(item.person_id, before, self._contribution(item.person_id, facts))

    def audience(self, destination_id: str, audience: str) -> set[Member]:
        return set(self.members.get((destination_id, audience), {}))

    def sizes(self, destination_id: str) -> dict[str, int]:
        """Each audience of the destination that has members, with its number of hashed identifiers."""
        return {
            audience: len(members)
            for (destination, audience), members in sorted(self.members.items())
            if destination == destination_id
        }

    def _contribution(
        self, person_id: str, facts: PersonFacts | None
    ) -> dict[AudienceKey, frozenset[Member]]:
        if facts is None:
            return {}
        return contribution(person_id, facts, self.destinations, self.policy, self.read, self.covering)

    def _settle(
        self,
        person_id: str,
        before: Mapping[AudienceKey, frozenset[Member]],
        after: Mapping[AudienceKey, frozenset[Member]],
    ) -> list[Delta]:
        """Move ``person_id`` from its ``before`` contributions to ``after``; the deltas that follow."""
        deltas: list[Delta] = []
        for key in sorted(before.keys() | after.keys()):
            old = before.get(key, frozenset())
            new = after.get(key, frozenset())
            if old == new:
                continue
            members = self.members.setdefault(key, {})
            for member in sorted(old - new):
                holders = members[member]
                holders.discard(person_id)
                if not holders:
                    del members[member]
                    deltas.append(Delta(key[0], key[1], member[0], member[1], False))
            for member in sorted(new - old):
                holders = members.setdefault(member, set())
                if not holders:
                    deltas.append(Delta(key[0], key[1], member[0], member[1], True))
                holders.add(person_id)
            if not members:
                del self.members[key]
        return deltas

    def _configure(self, configuration: Configuration) -> list[Delta]:
        """Recompute the persons' contributions under the new destinations, policy and use cases.

        When only the running use cases changed (a use case started or stopped), only the persons who
        are members of a key whose covering use cases changed can contribute differently: the others
        are not recomputed (their hashing is most of the cost)."""
        destinations = {d.id: d for d in configuration.destinations}
        usecases = covering(configuration.usecases)
        persons: list[str]
        if destinations == self.destinations and configuration.policy == self.policy:
            changed = {
                key
                for key in self.covering.keys() | usecases.keys()
                if key[0] in self.read and self.covering.get(key) != usecases.get(key)
            }
            persons = (
                sorted(
                    person_id
                    for person_id, facts in self.persons.items()
                    if any(facts.memberships.get(key, 0) % 2 == 1 for key in changed)
                )
                if changed
                else []
            )
        else:
            persons = sorted(self.persons)
        previous = {
            person_id: self._contribution(person_id, self.persons[person_id]) for person_id in persons
        }
        self.destinations = destinations
        self.policy = configuration.policy
        self.read = read_segments(configuration)
        self.usecases = configuration.usecases
        self.covering = usecases
        deltas: list[Delta] = []
        for person_id in persons:
            after = self._contribution(person_id, self.persons[person_id])
            deltas.extend(self._settle(person_id, previous[person_id], after))
        return deltas
