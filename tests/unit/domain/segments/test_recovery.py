"""Taking over published changes on restore (streams/domain/segments/recovery.py), against a model:
after adoption each membership key's transition count is the larger of the saved and the published
one, so the next change continues the published sequence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.segments.engine import SUBJECT_SEP
from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import Published, adopt, membership_key, newest

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
