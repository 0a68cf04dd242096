"""Control or treatment, decided from (use case id, person id) alone.

The arm is a pure function of the two ids and the control share, so every process (segment stage,
audience writer, a replay, a report) decides the same arm for the same person with no shared state,
across restarts and replays. SHA-256 spreads the ids uniformly; its first 8 bytes, as a fraction of
2**64, fall below the control share for a ``control_share`` fraction of persons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streams.domain.experiments.model import Arm

_SCALE = float(2**64)


def bucket(usecase_id: str, person_id: str) -> float:
    """The person's position in [0, 1) for this use case."""
    digest = hashlib.sha256(f"{usecase_id}\n{person_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def arm(usecase_id: str, person_id: str, control_share: float) -> Arm:
    """The person's arm in the use case: control for a ``control_share`` fraction of persons."""
    return Arm.CONTROL if bucket(usecase_id, person_id) < control_share else Arm.TREATMENT


@dataclass(frozen=True, slots=True)
class RunningUseCase:
    """What the audience layer needs of a running use case: whose persons it splits, and how.

    The segment stage marks the changes of its audience with the person's arm (and the sink records
    the entries as exposures); the audience writer leaves its control persons out of every
    destination audience drawn from the same segment and subject.
    """

    usecase_id: str
    version: int
    segment_id: str
    subject: str | None
    control_share: float

    def covers(self, segment_id: str, subject: str | None) -> bool:
        return segment_id == self.segment_id and subject == self.subject

    def arm(self, person_id: str) -> Arm:
        return arm(self.usecase_id, person_id, self.control_share)

    def is_control(self, person_id: str) -> bool:
        return bucket(self.usecase_id, person_id) < self.control_share


SegmentKey = tuple[str, str | None]  # (segment id, subject)
# (segment id, subject) -> the running use cases covering it; keys no use case covers are absent.
Covering = Mapping[SegmentKey, tuple[RunningUseCase, ...]]


def covering(usecases: Iterable[RunningUseCase]) -> dict[SegmentKey, tuple[RunningUseCase, ...]]:
    """The :data:`Covering` map of ``usecases`` (in their order)."""
    found: dict[SegmentKey, list[RunningUseCase]] = {}
    for usecase in usecases:
        found.setdefault((usecase.segment_id, usecase.subject), []).append(usecase)
    return {key: tuple(found[key]) for key in found}
