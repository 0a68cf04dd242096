"""The segments sink's rows: an entry into a running use case's audience is an exposure, with its arm."""

from __future__ import annotations

from typing import Any

from streams.domain.experiments.assignment import RunningUseCase, covering
from streams.domain.segments.changes import Change
from streams.domain.segments.profile import Profile
from streams.sinks.identity_tables import Columns
from streams.sinks.segment_tables import SegmentBatch
from streams.sinks.segments import _CHANGE_READER
from streams.wire.segments import encode_changes

RUNNING = [RunningUseCase("shoes", 2, "browsed", None, 0.5), RunningUseCase("other", 1, "lapsed", None, 0.1)]


def _column(columns: Columns, name: str) -> list[Any]:
    return columns.columns[columns.names.index(name)]


def _batch(*changes: Change) -> SegmentBatch:
    batch = SegmentBatch()
    for offset, record in enumerate(
        encode_changes(changes, Profile(changes[0].person_id), 9, covering(RUNNING))
    ):
        batch.add_change(_CHANGE_READER.decode(record), 0, offset)
    return batch


def test_an_entry_into_a_covered_audience_is_an_exposure_with_the_persons_arm() -> None:
    batch = _batch(
        Change("p1", "browsed", None, True, 1, 86_400_123, "event", "r", "m1", 3),
        Change("p1", "browsed", None, False, 2, 86_500_000, "timer", "r", None, 3),  # an exit: no exposure
        Change("p1", "vip", None, True, 1, 86_400_123, "event", "r", "m1", 1),  # no use case covers it
    )
    assert len(batch.changes) == 3
    assert _column(batch.exposures, "usecase_id") == ["shoes"]
    assert _column(batch.exposures, "version") == [2]
    assert _column(batch.exposures, "person_id") == ["p1"]
    assert _column(batch.exposures, "arm") == [RUNNING[0].arm("p1").value]
    assert _column(batch.exposures, "at_ms") == [86_400_123]
    assert _column(batch.exposures, "segment_id") == ["browsed"]
    assert _column(batch.exposures, "change_id") == _column(batch.changes, "change_id")[:1]
    assert [name for name, _ in batch.tables()] == ["segment_changes", "usecase_exposures"]


def test_both_arms_occur() -> None:
    arms = {RUNNING[0].arm(f"p{i}").value for i in range(20)}
    assert arms == {"control", "treatment"}
