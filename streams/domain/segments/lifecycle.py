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
    # Live segments missing from the desired set that stay live because pruning was not asked for.
    kept: list[str] = field(default_factory=list)

    def summary(self) -> str:
        counts = {action: 0 for action in ("added", "changed", "removed")}
        for write in self.writes:
            counts[write.action] += 1
        text = (
            f"{counts['added']} added, {counts['changed']} changed, {counts['removed']} removed, "
            f"{len(self.unchanged)} unchanged"
        )
        if self.kept:
            text += f", {len(self.kept)} live but not in the directory kept (--prune removes them)"
        return text


def plan(
    published: Mapping[str, Published], desired: Iterable[SegmentDefinition], *, prune: bool = False
) -> Plan:
    """New versions for added or changed definitions, and (only with ``prune``) removals of live ones
    missing from ``desired``; without it they are listed in ``kept``.

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
    for segment_id in sorted(set(published) - set(wanted)):
        before = published[segment_id]
        if before.deleted:
            continue
        if prune:
            result.writes.append(PlannedVersion(segment_id, before.version + 1, "removed", None))
        else:
            result.kept.append(segment_id)
    return result
