"""An audience change as ad platforms take it: one hashed identifier added to or removed from a list.

Per (destination, audience, kind, hash) the published changes alternate add / remove, starting with an
add (``AudienceState`` guarantees it; the property tests check it). Two consequences the pull API uses:

- the members of an audience after any prefix of its changes are the keys whose newest change is an add;
- a run of changes nets to the keys changed an odd number of times, each with its newest change, and
  those can be sent as two lists (Google's upload jobs cannot mix adds and removes) in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.domain.audiences.hashing import AudienceIdKind


@dataclass(frozen=True, slots=True)
class Delta:
    destination_id: str
    audience_id: str
    kind: AudienceIdKind
    hash: str  # SHA-256 hex of the identifier normalised for the destination's platform
    added: bool

    @property
    def key(self) -> tuple[str, str, AudienceIdKind, str]:
        return (self.destination_id, self.audience_id, self.kind, self.hash)


def net(changes: Iterable[Delta]) -> tuple[list[Delta], list[Delta]]:
    """The adds and the removes that a run of alternating changes amounts to, each in first-seen order."""
    count: dict[tuple[str, str, AudienceIdKind, str], int] = {}
    newest: dict[tuple[str, str, AudienceIdKind, str], Delta] = {}
    for change in changes:
        key = change.key
        count[key] = count.get(key, 0) + 1
        newest[key] = change
    adds: list[Delta] = []
    removes: list[Delta] = []
    for key, change in newest.items():
        if count[key] % 2 == 1:
            (adds if change.added else removes).append(change)
    return adds, removes


def fold(
    members: set[tuple[AudienceIdKind, str]], changes: Iterable[Delta]
) -> set[tuple[AudienceIdKind, str]]:
    """``members`` of one audience after ``changes`` of it, applied in order as set operations."""
    result = set(members)
    for change in changes:
        if change.added:
            result.add((change.kind, change.hash))
        else:
            result.discard((change.kind, change.hash))
    return result
