"""Retention of inactive persons: which profiles the segment stage removes, and when.

A policy (``OMNISEG_SEGMENTS_INACTIVE_DAYS``, ``OMNISEG_SEGMENTS_INACTIVE_APPLIES_TO``) names a quiet
period and the persons it applies to. A profile is inactive at time ``t`` when the policy applies to it
and its newest event (by event time, ``Profile.last_ts``) is at least the quiet period before ``t``
(up to the rounding below).
Its retention deadline (newest event + quiet period, rounded up to 1% of the period so that it moves
only now and then, not with every event) is part of the profile's next deadline
(:meth:`SegmentEngine.next_deadline`), so the stage's timers find it without a scan.

Persons it applies to:

- ``anonymous``: the profile holds no contact identifier (email, phone, userId, crmId, loyaltyCard,
  espSubscriberId, advertisingId; :mod:`streams.domain.segments.recording`), only anonymous ids,
  cookies and device ids, which profiles do not keep;
- ``all``: every person.

A removed person leaves behind only its membership counters when it ever held a membership
(:func:`counters_of`): a person who comes back starts a new profile whose changes continue the
transition numbers (``seq``), so the history's records of one membership keep alternating and none
replaces an earlier one (ClickHouse keys ``segment_changes`` by ``seq``). A person that never held a
membership leaves nothing (a tombstone).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from streams.domain.segments.profile import Profile

AppliesTo = Literal["anonymous", "all"]
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class InactivityPolicy:
    """Remove the profiles ``applies_to`` names that had no event for ``after_ms`` (0: never)."""

    after_ms: int
    applies_to: AppliesTo = "anonymous"
    # Deadlines are rounded up to a multiple of this: 1% of the period, at least a second.
    grain_ms: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "grain_ms", max(1000, self.after_ms // 100))

    @classmethod
    def from_days(cls, days: float, applies_to: AppliesTo = "anonymous") -> InactivityPolicy:
        if days < 0:
            raise ValueError(f"the inactivity period must be 0 (never) or more days, got {days:g}")
        return cls(round(days * DAY_MS), applies_to)

    @property
    def enabled(self) -> bool:
        return self.after_ms > 0

    def deadline(self, profile: Profile) -> int | None:
        """When the person becomes inactive: newest event + the period, rounded up to the grain;
        None when never.

        Rounded so that the deadline (and so the profile's ``due``) moves only when an event crosses
        a grain, not with every event: each move schedules one more timer entry.
        """
        # On every event's path (SegmentEngine.next_deadline): one call, no helpers.
        last = profile.last_ts
        if last is None or self.after_ms <= 0 or (self.applies_to != "all" and profile.contacts):
            return None
        grain = self.grain_ms
        return -(-(last + self.after_ms) // grain) * grain

    def inactive(self, profile: Profile, now: int) -> bool:
        """Whether the profile is to be removed at ``now``."""
        deadline = self.deadline(profile)
        return deadline is not None and deadline <= now

    def describe(self) -> str:
        if not self.enabled:
            return "never"
        days = self.after_ms / DAY_MS
        return f"{self.applies_to} persons with no event for {days:g} days"


def counters_of(profile: Profile) -> Profile | None:
    """What a removed person leaves: its membership transition counters (every membership exited),
    so a returning person's changes continue them, and the input offsets it had applied (a replay
    after a crash skips them); None when it never held a membership."""
    if not profile.members:
        return None
    assert not profile.current_members(), "a person is removed only after exiting every segment"
    return Profile(profile.person_id, members=dict(profile.members), offsets=dict(profile.offsets))
