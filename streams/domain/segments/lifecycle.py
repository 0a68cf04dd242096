"""Definition versions: what `omniseg segments apply DIR` changes, given what is already published."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams.domain.segments.model import SegmentDefinition


@dataclass(frozen=True, slots=True)
class Published:
    """The newest record of one segment on the definitions topic."""

    version: int
    hash: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class PlannedVersion:
    segment_id: str
    version: int
    action: str  # added | changed | removed
    definition: SegmentDefinition | None  # None when removed


@dataclass
class Plan:
    writes: list[PlannedVersion] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = {action: 0 for action in ("added", "changed", "removed")}
        for write in self.writes:
            counts[write.action] += 1
        return (
            f"{counts['added']} added, {counts['changed']} changed, {counts['removed']} removed, "
            f"{len(self.unchanged)} unchanged"
        )


def plan(
    published: Mapping[str, Published], desired: Iterable[SegmentDefinition], *, prune: bool = True
) -> Plan:
    """New versions for added or changed definitions, and (with ``prune``) removals of missing ones.

    A version is the previous one plus one, so a segment removed and added back continues its count.
    """
    result = Plan()
    wanted: dict[str, SegmentDefinition] = {d.id: d for d in desired}
    for segment_id in sorted(wanted):
        definition = wanted[segment_id]
        before = published.get(segment_id)
        if before is None:
            result.writes.append(PlannedVersion(segment_id, 1, "added", definition))
        elif before.deleted:
            result.writes.append(PlannedVersion(segment_id, before.version + 1, "added", definition))
        elif before.hash != definition.content_hash():
            result.writes.append(PlannedVersion(segment_id, before.version + 1, "changed", definition))
        else:
            result.unchanged.append(segment_id)
    if prune:
        for segment_id in sorted(set(published) - set(wanted)):
            before = published[segment_id]
            if not before.deleted:
                result.writes.append(PlannedVersion(segment_id, before.version + 1, "removed", None))
    return result
