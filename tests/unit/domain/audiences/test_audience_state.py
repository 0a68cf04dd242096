"""AudienceState against a from-scratch computation, over random streams of memberships, identifier and
consent changes, merges and reconfigurations (destinations, consent policy and running use cases).

The reference below keeps only the latest facts per person and recomputes every audience from nothing:
members of the segment the destination reads, with every required purpose granted, and not in the
control arm of a running use case covering that segment and subject, contribute the platform hashes of
their identifiers of the granted kinds.
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
from streams.domain.experiments.assignment import RunningUseCase, arm
from streams.domain.experiments.model import Arm

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

BASES = (
    (tuple(load_destinations([("both.yaml", _BOTH)])), ConsentPolicy(defaults={"email": True})),
    (
        tuple(load_destinations([("other.yaml", _OTHER)])),
        ConsentPolicy(defaults={"advertising": True, "analytics": True}),
    ),
)
# Running use cases: each splits p0..p3 into both arms (test_every_use_case_has_both_arms_among_the_persons).
UC_BROWSERS = RunningUseCase("uc-browsers", 1, "browsers", None, 0.5)  # control: p0, p2
UC_BROWSERS_2 = RunningUseCase("uc-browsers-2", 1, "browsers", None, 0.5)  # control: p2, p3
UC_P1 = RunningUseCase("uc-p1", 1, "bought", "product:p1", 0.5)  # control: p1, p2, p3
UC_P1_V2 = RunningUseCase("uc-p1", 2, "bought", "product:p1", 0.3)  # control: p2, p3
UC_P2 = RunningUseCase("uc-p2", 1, "bought", "product:p2", 0.5)  # control: p1
UC_OTHER = RunningUseCase("uc-other", 1, "other", None, 0.5)  # a segment no destination reads
USECASE_SETS: tuple[tuple[RunningUseCase, ...], ...] = (
    (),
    (UC_BROWSERS,),
    (UC_BROWSERS, UC_P1),
    (UC_P2, UC_OTHER),
    (UC_BROWSERS_2, UC_BROWSERS, UC_P1_V2),  # two use cases of one key; a new version of another
)
CONFIGS = tuple(
    Configuration(destinations, policy, usecases)
    for destinations, policy in BASES
    for usecases in USECASE_SETS
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
                if _in_control(self.configuration.usecases, person, segment, subject):
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


def _in_control(usecases: tuple[RunningUseCase, ...], person: str, segment: str, subject: str | None) -> bool:
    return any(
        (u.segment_id, u.subject) == (segment, subject)
        and arm(u.usecase_id, person, u.control_share) is Arm.CONTROL
        for u in usecases
    )


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
    items: list[AudienceInput] = [draw(st.sampled_from(CONFIGS))]
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


def test_every_use_case_has_both_arms_among_the_persons() -> None:
    """The random streams exercise both arms of every running use case (and the exclusion at all)."""
    for usecase in {u for usecases in USECASE_SETS for u in usecases}:
        arms = {arm(usecase.usecase_id, person, usecase.control_share) for person in PERSONS}
        assert arms == {Arm.CONTROL, Arm.TREATMENT}, usecase
    destinations = [d for base, _ in BASES for d in base]
    read = {key for key in KEYS if any(_reads(d, *key) for d in destinations)}
    assert {(u.segment_id, u.subject) for u in (UC_BROWSERS, UC_P1, UC_P2)} <= read
    assert (UC_OTHER.segment_id, UC_OTHER.subject) not in read


_HELD_OUT = f"""
- id: google
  kind: google_customer_match
  api_key_sha256: {_KEY_A}
  identifiers: [email, phone]
  consent: [advertising]
  audiences:
    - segment: browsers
    - segment: bought
      subjects: "product:*"
"""
_POLICY = ConsentPolicy(defaults={"advertising": True})
_HELD_OUT_DESTINATIONS = tuple(load_destinations([("held-out.yaml", _HELD_OUT)]))
_UC = RunningUseCase("uc-held-out", 1, "browsers", None, 0.5)
_CONTROL, _TREATMENT = "ctl", "trt"


def _google(kind: AudienceIdKind, value: str) -> tuple[AudienceIdKind, str]:
    digest = _digest(Platform.GOOGLE, kind, value)
    assert digest is not None
    return kind, digest


def test_starting_a_use_case_removes_only_its_control_persons_hashes_and_stopping_adds_them_back() -> None:
    assert _UC.is_control(_CONTROL) and not _UC.is_control(_TREATMENT)
    state = AudienceState(Configuration(_HELD_OUT_DESTINATIONS, _POLICY))
    # Google reads both emails alike: the control person's email hash is the treatment person's too.
    state.apply(
        PersonUpdate(
            _CONTROL,
            {AudienceIdKind.EMAIL: ("jane.doe@gmail.com",), AudienceIdKind.PHONE: ("+16505551212",)},
            {},
        )
    )
    state.apply(PersonUpdate(_TREATMENT, {AudienceIdKind.EMAIL: ("janedoe@gmail.com",)}, {}))
    for person in (_CONTROL, _TREATMENT):
        state.apply(MembershipChange(person, "browsers", None, 1))
    state.apply(MembershipChange(_CONTROL, "bought", "product:p1", 1))
    email = _google(AudienceIdKind.EMAIL, "janedoe@gmail.com")
    phone = _google(AudienceIdKind.PHONE, "+16505551212")
    assert state.audience("google", "browsers") == {email, phone}
    assert state.audience("google", "bought/product:p1") == {email, phone}

    started = state.apply(Configuration(_HELD_OUT_DESTINATIONS, _POLICY, (_UC,)))
    # Only the hash no treatment person gives goes; the use case covers browsers, not bought.
    assert started == [Delta("google", "browsers", *phone, False)]
    assert state.audience("google", "bought/product:p1") == {email, phone}
    assert state.apply(Configuration(_HELD_OUT_DESTINATIONS, _POLICY, (_UC,))) == [], "a repeat"
    # While it runs, the control person's changes of browsers change nothing there.
    assert state.apply(MembershipChange(_CONTROL, "browsers", None, 2)) == []
    assert state.apply(MembershipChange(_CONTROL, "browsers", None, 3)) == []
    assert state.audience("google", "browsers") == {email}

    stopped = state.apply(Configuration(_HELD_OUT_DESTINATIONS, _POLICY))
    assert stopped == [Delta("google", "browsers", *phone, True)]
    assert state.audience("google", "browsers") == {email, phone}


def test_a_shared_hash_goes_when_its_last_treatment_contributor_leaves_while_a_use_case_runs() -> None:
    state = AudienceState(Configuration(_HELD_OUT_DESTINATIONS, _POLICY, (_UC,)))
    state.apply(PersonUpdate(_CONTROL, {AudienceIdKind.EMAIL: ("jane.doe@gmail.com",)}, {}))
    state.apply(PersonUpdate(_TREATMENT, {AudienceIdKind.EMAIL: ("janedoe@gmail.com",)}, {}))
    email = _google(AudienceIdKind.EMAIL, "janedoe@gmail.com")
    assert state.apply(MembershipChange(_CONTROL, "browsers", None, 1)) == []
    assert state.apply(MembershipChange(_TREATMENT, "browsers", None, 1)) == [
        Delta("google", "browsers", *email, True)
    ]
    assert state.apply(MembershipChange(_TREATMENT, "browsers", None, 2)) == [
        Delta("google", "browsers", *email, False)
    ]
    # Stopped: the control person, still a member, gives the hash again.
    assert state.apply(Configuration(_HELD_OUT_DESTINATIONS, _POLICY)) == [
        Delta("google", "browsers", *email, True)
    ]
