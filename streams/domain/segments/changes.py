"""A membership change: a person entered or exited a segment (or a suppression audience's subject).

Per person and segment key the changes alternate entered / exited, numbered by ``seq`` (the
transition count), and none repeats (invariant 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streams.domain.segments.events import slot_setters


@dataclass(frozen=True, slots=True)
class Change:
    person_id: str
    segment_id: str
    subject: str | None
    entered: bool
    seq: int
    at: int
    trigger: str  # event | timer | merge | definition | erasure | retention
    reason: str
    message_id: str | None
    version: int


def _change_maker() -> Callable[..., Change]:
    """``Change(...)`` without the generated ``__init__``: its ten fields set through their descriptors
    (``slot_setters``: the frozen dataclass's __init__ is about 3x slower, compiled or not)."""
    new, (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9) = slot_setters(Change, 10)

    def change(
        person_id: str,
        segment_id: str,
        subject: str | None,
        entered: bool,
        seq: int,
        at: int,
        trigger: str,
        reason: str,
        message_id: str | None,
        version: int,
    ) -> Change:
        made: Change = new(Change)
        s0(made, person_id)
        s1(made, segment_id)
        s2(made, subject)
        s3(made, entered)
        s4(made, seq)
        s5(made, at)
        s6(made, trigger)
        s7(made, reason)
        s8(made, message_id)
        s9(made, version)
        return made

    return change


make_change = _change_maker()
