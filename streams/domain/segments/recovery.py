"""Memberships published after a profile's state was saved: the state takes them over on restore.

A stage publishes changes as it goes and saves state at checkpoints. After a crash between the two,
the restored state is older than what email tools and ClickHouse were told. Replaying the input does
not always republish the same changes (a window that has passed meanwhile does not enter again), so
the restored profile first adopts every newer published transition of each membership key (its
``seq`` and definition version), then is evaluated again: state and published changes agree, and a
membership that no longer holds exits with the next ``seq``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

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
