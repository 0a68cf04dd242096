"""AudienceState against a from-scratch computation, over random streams of memberships, identifier and
consent changes, merges and reconfigurations.

The reference below keeps only the latest facts per person and recomputes every audience from nothing:
members of the segment the destination reads, with every required purpose granted, contribute the
platform hashes of their identifiers of the granted kinds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.audiences.deltas import Delta, fold, net
from streams.domain.audiences.destinations import Destination, load_destinations
from streams.domain.audiences.hashing import AudienceIdKind, NotHashable, Platform, normalise
from streams.domain.audiences.state import (
    AudienceInput,
    AudienceState,
    Configuration,
    MembershipChange,
    PersonRemoved,
    PersonUpdate,
)
from streams.domain.consent import ConsentPolicy, Decision

_KEY_A = "a" * 64
_KEY_B = "b" * 64
_KEY_C = "c" * 64

_BOTH = f"""
- id: google
  kind: google_customer_match
  api_key_sha256: {_KEY_A}
  identifiers: [email, phone, external_id]
  consent: [advertising]
  audiences:
    - segment: browsers
    - segment: bought
      subjects: "product:*"
- id: meta
  kind: meta_custom_audience
  api_key_sha256: {_KEY_B}
  identifiers: [email, phone, mobile_advertising_id]
  consent: [advertising, email]
  audiences:
    - segment: browsers
    - segment: bought
      subjects: "product:p1"
"""

_OTHER = f"""
- id: google
  kind: google_customer_match
  api_key_sha256: {_KEY_A}
  identifiers: [email]
  consent: [email]
  audiences:
    - segment: bought
      subjects: "product:p2"
- id: dsp
  kind: generic
  api_key_sha256: {_KEY_C}
  identifiers: [email, external_id]
  consent: [analytics]
  audiences:
    - segment: browsers
"""

CONFIGS = (
    Configuration(
        tuple(load_destinations([("both.yaml", _BOTH)])),
        ConsentPolicy(defaults={"email": True}),
    ),
    Configuration(
        tuple(load_destinations([("other.yaml", _OTHER)])),
        ConsentPolicy(defaults={"advertising": True, "analytics": True}),
    ),
)
PERSONS = ("p0", "p1", "p2", "p3")
KEYS = (("browsers", None), ("bought", "product:p1"), ("bought", "product:p2"), ("other", None))
VALUES = {
    # Gmail dot variants collide on Google: two persons can contribute one hash.
    AudienceIdKind.EMAIL: ("jane.doe@gmail.com", "janedoe@gmail.com", "ann@shop.example", "not-an-email"),
    AudienceIdKind.PHONE: ("+16505551212", "+442071838750"),
    AudienceIdKind.EXTERNAL_ID: ("C-1", "C-2"),
    AudienceIdKind.MOBILE_ADVERTISING_ID: ("aece52e7-03ee-455a-b3c4-e57283966239",),
}


@dataclass
class Reference:
    configuration: Configuration = CONFIGS[0]
    seqs: dict[tuple[str, tuple[str, str | None]], int] = field(default_factory=dict)
    identifiers: dict[str, dict[AudienceIdKind, tuple[str, ...]]] = field(default_factory=dict)
    consent: dict[str, dict[str, Decision]] = field(default_factory=dict)

    def apply(self, item: AudienceInput) -> None:
        if isinstance(item, Configuration):
            self.configuration = item
        elif isinstance(item, MembershipChange):
            key = (item.person_id, (item.segment_id, item.subject))
            self.seqs[key] = max(self.seqs.get(key, 0), item.seq)
        elif isinstance(item, PersonUpdate):
            self.identifiers[item.person_id] = dict(item.identifiers)
            self.consent[item.person_id] = dict(item.consent)
        else:
            for key in [k for k in self.seqs if k[0] == item.person_id]:
                del self.seqs[key]
            self.identifiers.pop(item.person_id, None)
            self.consent.pop(item.person_id, None)

    def audiences(self) -> dict[tuple[str, str], set[tuple[AudienceIdKind, str]]]:
        result: dict[tuple[str, str], set[tuple[AudienceIdKind, str]]] = {}
        policy = self.configuration.policy
        for destination in self.configuration.destinations:
            for (person, (segment, subject)), seq in self.seqs.items():
                if seq % 2 == 0 or not _reads(destination, segment, subject):
                    continue
                consent = self.consent.get(person, {})
                if not all(_granted(policy, consent, p) for p in destination.consent):
                    continue
                audience = segment if subject is None else f"{segment}/{subject}"
                for kind in destination.identifiers:
                    for value in self.identifiers.get(person, {}).get(kind, ()):
                        digest = _digest(Platform(destination.kind), kind, value)
                        if digest is not None:
                            result.setdefault((destination.id, audience), set()).add((kind, digest))
        return result


def _reads(destination: Destination, segment: str, subject: str | None) -> bool:
    for source in destination.audiences:
        if source.segment != segment:
            continue
        if source.subjects is None:
            if subject is None:
                return True
        elif subject is not None and (
            source.subjects == subject
            or (source.subjects.endswith(":*") and subject.startswith(source.subjects[:-1]))
        ):
            return True
    return False


def _granted(policy: ConsentPolicy, consent: dict[str, Decision], purpose: str) -> bool:
    decision = consent.get(purpose)
    return policy.defaults.get(purpose, False) if decision is None else decision.granted


def _digest(platform: Platform, kind: AudienceIdKind, value: str) -> str | None:
    try:
        return hashlib.sha256(normalise(platform, kind, value).encode()).hexdigest()
    except NotHashable:
        return None


@st.composite
def streams_of_inputs(draw: st.DrawFn) -> list[AudienceInput]:
    items: list[AudienceInput] = [CONFIGS[0]]
    seqs: dict[tuple[str, tuple[str, str | None]], int] = {}
    for _ in range(draw(st.integers(1, 60))):
        choice = draw(st.integers(0, 9))
        person = draw(st.sampled_from(PERSONS))
        if choice <= 4:
            key = draw(st.sampled_from(KEYS))
            seq = seqs.get((person, key), 0)
            if seq and draw(st.integers(0, 4)) == 0:
                seq = draw(st.integers(1, seq))  # a repeat of an earlier change
            else:
                seq += 1
                seqs[(person, key)] = seq
            items.append(MembershipChange(person, key[0], key[1], seq))
        elif choice <= 7:
            identifiers = {
                kind: tuple(draw(st.lists(st.sampled_from(values), max_size=2, unique=True)))
                for kind, values in VALUES.items()
            }
            consent = {
                purpose: Decision(draw(st.booleans()), draw(st.integers(0, 5)))
                for purpose in draw(st.lists(st.sampled_from(("advertising", "email", "analytics"))))
            }
            items.append(PersonUpdate(person, identifiers, consent))
        elif choice == 8:
            items.append(PersonRemoved(person))
            seqs = {k: v for k, v in seqs.items() if k[0] != person}
        else:
            items.append(draw(st.sampled_from(CONFIGS)))
    return items


def _by_audience(deltas: list[Delta]) -> dict[tuple[str, str], list[Delta]]:
    grouped: dict[tuple[str, str], list[Delta]] = {}
    for delta in deltas:
        grouped.setdefault((delta.destination_id, delta.audience_id), []).append(delta)
    return grouped


@settings(max_examples=300, deadline=None)
@given(streams_of_inputs())
def test_audiences_equal_a_from_scratch_computation_after_every_input(items: list[AudienceInput]) -> None:
    state = AudienceState()
    reference = Reference()
    published: list[Delta] = []
    for item in items:
        published.extend(state.apply(item))
        reference.apply(item)
        expected = reference.audiences()
        assert {k: set(v) for k, v in state.members.items()} == expected
        folded = {key: fold(set(), deltas) for key, deltas in _by_audience(published).items()}
        assert {k: v for k, v in folded.items() if v} == expected


@settings(max_examples=300, deadline=None)
@given(streams_of_inputs())
def test_each_hash_alternates_add_and_remove_starting_with_an_add(items: list[AudienceInput]) -> None:
    state = AudienceState()
    last: dict[tuple[str, str, AudienceIdKind, str], bool] = {}
    for item in items:
        for delta in state.apply(item):
            assert last.get(delta.key, False) != delta.added, delta
            last[delta.key] = delta.added


@settings(max_examples=200, deadline=None)
@given(streams_of_inputs(), st.data())
def test_a_snapshot_at_any_cursor_plus_the_netted_deltas_after_it_equals_the_audience_at_the_end(
    items: list[AudienceInput], data: st.DataObject
) -> None:
    state = AudienceState()
    published = [delta for item in items for delta in state.apply(item)]
    cursor = data.draw(st.integers(0, len(published)))
    end = data.draw(st.integers(cursor, len(published)))
    for key in _by_audience(published):
        mine = [(d.destination_id, d.audience_id) == key for d in published]
        before = [d for d, m in zip(published[:cursor], mine, strict=False) if m]
        between = [d for d, m in zip(published[cursor:end], mine[cursor:end], strict=True) if m]
        adds, removes = net(between)
        assert not {a.key for a in adds} & {r.key for r in removes}
        pulled = (fold(set(), before) | {(a.kind, a.hash) for a in adds}) - {
            (r.kind, r.hash) for r in removes
        }
        assert pulled == fold(set(), before + between)


@settings(max_examples=100, deadline=None)
@given(streams_of_inputs())
def test_a_replay_of_the_same_inputs_publishes_the_same_deltas_in_the_same_order(
    items: list[AudienceInput],
) -> None:
    one, two = AudienceState(), AudienceState()
    assert [d for i in items for d in one.apply(i)] == [d for i in items for d in two.apply(i)]
