"""Taking over published changes on restore (streams/domain/segments/recovery.py), against a model:
after adoption each membership key's transition count is the larger of the saved and the published
one, so the next change continues the published sequence; a replay publishes only transitions past
the published ones."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.segments.changes import make_change
from streams.domain.segments.engine import SUBJECT_SEP
from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import (
    Published,
    adopt,
    membership_key,
    newer_than,
    newest,
    unpublished,
)

KEYS = st.sampled_from(["a", "b", f"sup{SUBJECT_SEP}product:p1", f"sup{SUBJECT_SEP}product:p2"])


@given(
    saved=st.dictionaries(KEYS, st.integers(0, 6)),
    published=st.lists(st.tuples(KEYS, st.integers(1, 8), st.integers(1, 3))),
)
def test_adoption_continues_the_newest_sequence_of_each_key(
    saved: dict[str, int], published: list[tuple[str, int, int]]
) -> None:
    profile = Profile("p")
    profile.members.update(saved)
    profile.versions.update(dict.fromkeys(saved, 0))
    last = newest(("p", key, seq, version) for key, seq, version in published).get("p", {})
    moved = adopt(profile, last)
    model = dict(saved)
    for key, seq, _version in published:
        model[key] = max(model.get(key, 0), seq)
    assert {k: v for k, v in profile.members.items() if v} == {k: v for k, v in model.items() if v}
    expected_moved = {
        key.partition(SUBJECT_SEP)[0] for key, entry in last.items() if entry.seq > saved.get(key, 0)
    }
    assert moved == sorted(expected_moved)
    for key in last:
        if last[key].seq > saved.get(key, 0):
            assert profile.versions[key] == last[key].version


def test_newest_keeps_the_highest_seq_per_person_and_key() -> None:
    found = newest([("p", "a", 1, 1), ("p", "a", 3, 2), ("p", "a", 2, 1), ("q", "a", 1, 1)])
    assert found == {"p": {"a": Published(3, 2)}, "q": {"a": Published(1, 1)}}


def test_a_suppression_key_holds_its_subject() -> None:
    assert membership_key("seg", None) == "seg"
    assert membership_key("sup", "product:p1") == f"sup{SUBJECT_SEP}product:p1"


@given(
    saved=st.dictionaries(KEYS, st.integers(0, 6)),
    published=st.dictionaries(KEYS, st.integers(1, 8)),
)
def test_newer_than_keeps_what_the_state_lacks(saved: dict[str, int], published: dict[str, int]) -> None:
    profile = Profile("p")
    profile.members.update(saved)
    last = {key: Published(seq, 1) for key, seq in published.items()}
    newer = newer_than(profile, last)
    assert newer == {key: entry for key, entry in last.items() if entry.seq > saved.get(key, 0)}
    adopt(profile, newer)
    assert newer_than(profile, last) == {}, "after taking them over, nothing published is newer"


@given(
    published=st.dictionaries(KEYS, st.integers(1, 8)),
    replayed=st.lists(st.tuples(KEYS, st.integers(1, 10))),
)
def test_a_replay_publishes_only_transitions_past_the_published(
    published: dict[str, int], replayed: list[tuple[str, int]]
) -> None:
    changes = []
    for key, seq in replayed:
        segment, _sep, subject = key.partition(SUBJECT_SEP)
        changes.append(
            make_change("p", segment, subject or None, seq % 2 == 1, seq, 0, "event", "r", None, 1)
        )
    last = {key: Published(seq, 1) for key, seq in published.items()}
    fresh = unpublished(changes, last)
    expected = [
        change for change, (key, seq) in zip(changes, replayed, strict=True) if seq > published.get(key, 0)
    ]
    assert fresh == expected
