"""Memberships published after a profile's state was saved: the state takes them over on restore.

A stage publishes changes as it goes and saves state at checkpoints. After a crash between the two,
the restored state is older than what email tools and ClickHouse were told. Replaying the input does
not always republish the same changes (a window that has passed meanwhile does not enter again), so
the stage replays the input into the restored profile without publishing again what was published
(:func:`unpublished`), and once the replay reached the end of the profile's partitions it adopts every
published transition of each membership key still newer than its state (its ``seq`` and definition
version), then evaluates it again: state and published changes agree, and a membership that no longer
holds exits with the next ``seq``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SUBJECT_SEP
from streams.domain.segments.profile import Profile


@dataclass(frozen=True, slots=True)
class Published:
    """The newest change published for one person and membership key."""

    seq: int
    version: int


def membership_key(segment_id: str, subject: str | None) -> str:
    """The key of a membership in :attr:`Profile.members` (a suppression audience's key has its subject)."""
    return segment_id if subject is None else f"{segment_id}{SUBJECT_SEP}{subject}"


def newest(changes: Iterable[tuple[str, str, int, int]]) -> dict[str, dict[str, Published]]:
    """``(person, key, seq, version)`` of published changes -> the newest per person and key."""
    out: dict[str, dict[str, Published]] = {}
    for person, key, seq, version in changes:
        keys = out.setdefault(person, {})
        known = keys.get(key)
        if known is None or seq > known.seq:
            keys[key] = Published(seq, version)
    return out


def newer_than(profile: Profile, published: Mapping[str, Published]) -> dict[str, Published]:
    """The published transitions the profile's state does not have (empty: the state is up to date)."""
    members = profile.members
    return {key: last for key, last in published.items() if last.seq > members.get(key, 0)}


def unpublished(changes: list[Change], published: Mapping[str, Published]) -> list[Change]:
    """``changes`` less those already published: a replay that reproduces a transition the crashed
    owner published (same key, a ``seq`` it reached) must not publish it twice."""
    fresh = []
    for change in changes:
        last = published.get(membership_key(change.segment_id, change.subject))
        if last is None or change.seq > last.seq:
            fresh.append(change)
    return fresh


def adopt(profile: Profile, published: Mapping[str, Published]) -> list[str]:
    """Take over every published transition newer than the profile's; returns the segment ids whose
    membership moved (to evaluate again)."""
    moved: list[str] = []
    members, versions = profile.members, profile.versions
    for key, last in published.items():
        if last.seq > members.get(key, 0):
            key = sys.intern(key)
            members[key] = last.seq
            versions[key] = last.version
            moved.append(key.partition(SUBJECT_SEP)[0])
    return sorted(set(moved))
