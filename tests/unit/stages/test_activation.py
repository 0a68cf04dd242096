"""What the segment stage tells the audience writer (streams/stages/segments/activation.py): only the
memberships of read segments, and a person's facts with its first such membership or when they change
while it holds one; a segment that starts being read brings every membership held of it."""

from __future__ import annotations

from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import MembershipChange, PersonUpdate
from streams.domain.consent import ConsentPolicy
from streams.domain.segments.changes import Change, make_change
from streams.domain.segments.engine import SUBJECT_SEP
from streams.domain.segments.profile import Profile
from streams.stages.segments.activation import ActivationFeed
from streams.wire.audiences import decode_input

NOW = 1_790_000_000_000


def _feed(*reads: str) -> ActivationFeed:
    feed = ActivationFeed("audiences.inputs", ConsentPolicy())
    feed.reads = frozenset(reads)
    return feed


def _enter(profile: Profile, segment: str, subject: str | None = None) -> Change:
    """The next transition of the membership, applied to the profile as the engine does."""
    key = segment if subject is None else f"{segment}{SUBJECT_SEP}{subject}"
    seq = profile.members.get(key, 0) + 1
    profile.members[key] = seq
    return make_change(profile.person_id, segment, subject, seq % 2 == 1, seq, NOW, "event", "r", None, 1)


def _decoded(records: list[tuple[str, bytes, bytes]]) -> list[object]:
    return [decode_input(value) for _topic, _key, value in records]


def _shopper() -> Profile:
    profile = Profile("p1")
    profile.contacts["email"] = ["p1@shop.example", NOW]
    return profile


def test_only_read_segments_are_forwarded_and_the_first_one_brings_the_facts() -> None:
    feed, profile = _feed("buyers"), _shopper()
    assert feed.memberships(profile, [_enter(profile, "browsers")], NOW) == []
    assert not feed.reads_any(profile)

    first = _decoded(feed.memberships(profile, [_enter(profile, "buyers")], NOW))
    assert first == [
        PersonUpdate("p1", {AudienceIdKind.EMAIL: ("p1@shop.example",)}, {}),
        MembershipChange("p1", "buyers", None, 1),
    ]
    assert feed.reads_any(profile)
    # Its exit: the writer has the facts already.
    assert _decoded(feed.memberships(profile, [_enter(profile, "buyers")], NOW)) == [
        MembershipChange("p1", "buyers", None, 2)
    ]


def test_a_membership_that_begins_and_ends_in_one_batch_still_brings_the_facts() -> None:
    feed, profile = _feed("buyers"), _shopper()
    changes = [_enter(profile, "buyers"), _enter(profile, "buyers")]
    assert [type(item).__name__ for item in _decoded(feed.memberships(profile, changes, NOW))] == [
        "PersonUpdate",
        "MembershipChange",
        "MembershipChange",
    ]


def test_a_second_read_segment_does_not_send_the_facts_again() -> None:
    feed, profile = _feed("buyers", "bought"), _shopper()
    feed.memberships(profile, [_enter(profile, "buyers")], NOW)
    assert _decoded(feed.memberships(profile, [_enter(profile, "bought", "product:1")], NOW)) == [
        MembershipChange("p1", "bought", "product:1", 1)
    ]


def test_a_person_without_identifiers_sends_no_facts() -> None:
    feed, profile = _feed("buyers"), Profile("anon")
    assert _decoded(feed.memberships(profile, [_enter(profile, "buyers")], NOW)) == [
        MembershipChange("anon", "buyers", None, 1)
    ]


def test_a_segment_that_starts_being_read_brings_its_memberships_and_the_facts() -> None:
    feed, profile = _feed(), _shopper()
    _enter(profile, "buyers")
    _enter(profile, "bought", "product:1")
    _enter(profile, "bought", "product:1")
    _enter(profile, "browsers")
    assert _decoded(feed.held(profile, frozenset({"bought"}), NOW)) == [
        PersonUpdate("p1", {AudienceIdKind.EMAIL: ("p1@shop.example",)}, {}),
        MembershipChange("p1", "bought", "product:1", 2),
    ]
    assert feed.held(profile, frozenset({"unknown"}), NOW) == []
