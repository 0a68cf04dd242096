"""The incremental segment evaluator: apply an event, let time pass, fold a merged person, redefine.

Semantics (invariant 5): membership at time ``now`` is the rule over the person's events with
timestamps up to ``now``. An event timestamped after the moment it is applied counts from that
moment (its timestamp is clamped), so nothing is ever "in the future" and time only moves forward.
Every method returns the membership changes it caused; each is a flip of the stored membership, so
per person and segment the changes alternate entered / exited and none repeats (invariant 6).

Only segments an event can affect are evaluated: those whose conditions name the event, read traits
it carries, read purchases it is, or read every event (context and preferred-* conditions), plus the
segments that refer to them, plus the clock-driven ones when the person's next deadline has passed.
"""

from __future__ import annotations

import bisect
import sys
from array import array
from collections.abc import Iterable

from streams.domain.segments.backfill import (
    BackfillBatch,
    apply_backfill,
    forget_live,
    is_backfilled,
    note_live,
)
from streams.domain.segments.changes import Change, make_change
from streams.domain.segments.compiler import (
    PURCHASE,
    Compiled,
    ConditionCompiler,
    Evaluation,
    PlanStep,
    needs_local_time,
)
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.features import FEATURE_TRIGGER, Feature
from streams.domain.segments.inactivity import InactivityPolicy
from streams.domain.segments.loader import evaluation_order
from streams.domain.segments.merge import combine
from streams.domain.segments.model import SegmentDefinition
from streams.domain.segments.plans import Planner
from streams.domain.segments.preparation import NoCatalog, Prepared, ProductLookup
from streams.domain.segments.profile import KEPT_MESSAGE_IDS, Profile, message_hash
from streams.domain.segments.recording import Recorder

# Between a suppression audience's id and its subject in a membership key ("id\x1fproduct:sku-1").
SUBJECT_SEP = "\x1f"


def seen_before(seen: array[int], digest: int) -> bool:
    """``digest in seen``; for longer arrays a byte search (``in`` boxes every element)."""
    if len(seen) < 16:
        return digest in seen
    size = seen.itemsize
    raw, needle = seen.tobytes(), digest.to_bytes(size, sys.byteorder, signed=True)
    at = raw.find(needle)
    while at != -1:
        if at % size == 0:  # a whole element, not the bytes across two
            return True
        at = raw.find(needle, at + 1)
    return False


def is_empty_profile(profile: Profile) -> bool:
    """Whether ``profile`` holds no state that conditions read (a new person)."""
    return (
        profile.first_seen is None
        and profile.last_ts is None
        and profile.last_context is None
        and not profile.members
        and not profile.windowed
        and not profile.wvalues
        and not profile.totals
        and not profile.traits
        and not profile.purchases
        and not profile.purchase_count
        and not profile.revenue
        and not profile.ledger
        and not profile.category_ledger
        and not profile.channel_counts
        and not profile.hour_counts
        and not profile.category_counts
        and not profile.brand_counts
    )


class SegmentEngine:
    """Compiled definitions with their versions; evaluates profiles incrementally."""

    def __init__(
        self,
        definitions: Iterable[tuple[SegmentDefinition, int]],
        catalog: ProductLookup | None = None,
        *,
        timezone: str = "UTC",
        hemisphere: str = "north",
        inactivity: InactivityPolicy | None = None,
    ) -> None:
        self.catalog: ProductLookup = catalog or NoCatalog()
        self._lookup = None if type(self.catalog) is NoCatalog else self.catalog.lookup
        self.timezone = timezone
        self.hemisphere = hemisphere
        # Retention of inactive persons: its deadline is one of the profile's (the stage removes them).
        # Its terms as plain ints here: next_deadline runs for every event, and a call into the policy
        # costs more than the arithmetic (InactivityPolicy.deadline is the same computation; the
        # property tests hold the two together).
        self.inactivity = inactivity if inactivity is not None and inactivity.enabled else None
        self._idle_after = self.inactivity.after_ms if self.inactivity is not None else 0
        self._idle_grain = self.inactivity.grain_ms if self.inactivity is not None else 1
        self._idle_known_too = self.inactivity is not None and self.inactivity.applies_to == "all"
        self.definitions: dict[str, SegmentDefinition] = {}
        self.versions: dict[str, int] = {}
        for definition, version in definitions:
            self.definitions[definition.id] = definition
            self.versions[definition.id] = version
        self.order = [
            sys.intern(segment_id) for segment_id in evaluation_order(list(self.definitions.values()))
        ]
        compiler = ConditionCompiler(hemisphere)
        self.compiled: dict[str, Compiled] = {}
        for segment_id in self.order:
            definition = self.definitions[segment_id]
            if definition.kind == "suppression":
                self.compiled[segment_id] = Compiled(lambda ev: False, {PURCHASE}, [], [], set())
            else:
                assert definition.when is not None
                self.compiled[segment_id] = compiler.compile(definition.when)
        self.features: dict[str, Feature] = compiler.features
        self.planner = Planner(self.order, self.definitions, self.versions, self.compiled)
        self._deadlines = [d for compiled in self.compiled.values() for d in compiled.deadlines]
        # feature id -> window, for every windowed feature (the deadlines of windows)
        self._windows = {fid: f.window for fid, f in self.features.items() if f.window is not None}
        local = any(f.context.needs_local_time() for f in self.features.values()) or any(
            needs_local_time(d) for d in self.definitions.values()
        )
        self.recorder = Recorder(self.features.values(), self.planner.by_trigger, local)
        self._reasons: dict[str, str] = {}  # event name -> the reason of its changes
        # Features awaiting a backfill (new with this engine: await_backfill), and those whose backfill
        # run has ended (backfill_ended); see streams/domain/segments/backfill.py.
        self.backfilling: frozenset[str] = frozenset()
        self.backfill_done: frozenset[str] = frozenset()

    def new_features(self, previous: SegmentEngine | None) -> frozenset[str]:
        """The features this engine keeps that ``previous`` did not (or still awaited a backfill for)."""
        if previous is None:
            return frozenset()
        kept = previous.features.keys() - previous.backfilling
        return frozenset(fid for fid in self.features if fid not in kept)

    def await_backfill(self, feature_ids: Iterable[str]) -> None:
        """Count ``feature_ids`` live from now on, remembering which events, until their backfill."""
        self.backfilling = frozenset(fid for fid in feature_ids if fid in self.features)
        self.backfill_done = frozenset()

    def backfill_ended(self, feature_ids: Iterable[str]) -> None:
        """The run that fills ``feature_ids`` has sent every person's part: stop remembering events."""
        ended = frozenset(feature_ids)
        self.backfilling = self.backfilling - ended
        self.backfill_done = self.backfill_done | ended

    def segments_reading(self, feature_ids: Iterable[str]) -> set[str]:
        """The segments whose conditions read one of ``feature_ids``."""
        wanted = set(feature_ids)
        return {sid for sid, one in self.compiled.items() if any(f.id in wanted for f in one.features)}

    def backfill(self, profile: Profile, batch: BackfillBatch, now: int) -> tuple[list[Change], int]:
        """Add one backfill part to ``profile`` and re-evaluate the segments reading what it filled:
        (the changes, trigger ``backfill``; the entries added). A part applied before changes nothing."""
        filled, added = apply_backfill(self.features, profile, batch, now)
        if not filled:
            return [], 0
        reason = f"history backfilled (run {batch.run_id})"
        changes = self.reevaluate(profile, now, "backfill", reason, self.segments_reading(filled))
        return changes, added

    def apply(self, profile: Profile, event: SegmentEvent, now: int) -> list[Change]:
        """Apply one event at ``now``; returns the changes (none for a duplicate message id)."""
        digest = message_hash(event.message_id)
        seen = profile.seen
        if seen_before(seen, digest):
            return self.tick(profile, now)  # applied once; but the clock it came with still counts
        seen.append(digest)
        if len(seen) > KEPT_MESSAGE_IDS:
            del seen[: len(seen) - KEPT_MESSAGE_IDS]
        ts = event.timestamp_ms
        if now < ts:
            ts = now
        prepared = Prepared(event, ts, self._lookup, self.timezone, self.hemisphere)
        first = profile.last_ts is None
        fresh = first and is_empty_profile(profile)
        matched: list[str] | None = [] if fresh else None
        tokens = self.recorder.record(profile, prepared, now, matched)
        if self.backfilling or profile.backfill_live:
            self._note_live(profile, tokens, digest)
        due = profile.due
        key = (event.name, bool(event.traits), bool(due and due <= now) and not first, tokens)
        if matched is not None:
            # Never evaluated: every segment that holds without matching events ("did not buy",
            # "not gold") must be entered now, not only those this event triggers.
            plan = self.planner.for_first_event(key, matched)
        elif first:
            plan = self.planner.all_plan
        else:
            plan = self.planner.for_event(key)
        reason = self._reasons.get(event.name)
        if reason is None:
            reason = f"event {event.name!r}"
            if len(self._reasons) < 10_000:
                self._reasons[event.name] = reason
        changes = self._evaluate(profile, now, plan, "event", reason, event.message_id)
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def _note_live(self, profile: Profile, tokens: tuple[str, ...], digest: int) -> None:
        """Remember the event in the features awaiting backfill that counted it."""
        live = profile.backfill_live
        if live and (self.backfill_done or not live.keys() <= self.features.keys()):
            forget_live(profile, self.backfill_done, self.features)
        awaiting = self.backfilling.union(live)
        start = len(FEATURE_TRIGGER)
        counted = [
            token[start:]
            for token in tokens
            if token.startswith(FEATURE_TRIGGER)
            and token[start:] in awaiting
            and not is_backfilled(profile, token[start:])
        ]
        if counted:
            note_live(profile, counted, digest)

    def tick(self, profile: Profile, now: int) -> list[Change]:
        """Let time pass to ``now``: windows expire, recency and derived conditions move."""
        if not profile.due or profile.due > now:
            return []
        changes = self._evaluate(profile, now, self.planner.timed_plan, "timer", "time passed", None)
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def next_deadline(self, profile: Profile, now: int) -> int | None:
        """The earliest time after ``now`` at which a clock-driven condition may change."""
        best: int | None = None
        windows = self._windows
        windowed = profile.windowed
        stale: list[str] | None = None
        for feature_id, times in windowed.items():
            window = windows.get(feature_id)
            if window is None:
                if stale is None:
                    stale = []
                stale.append(feature_id)
                continue
            if not times:
                continue
            # When the oldest event still in the window leaves it (expired ones are not yet pruned).
            cutoff = now - window
            start = 0 if times[0] > cutoff else bisect.bisect_right(times, cutoff)
            if start < len(times):
                at = times[start] + window
                if at > now and (best is None or at < best):
                    best = at
        if stale is not None:
            for feature_id in stale:
                del windowed[feature_id]  # no definition uses it any more
                profile.wvalues.pop(feature_id, None)
        for deadline in self._deadlines:
            when = deadline(profile, now)
            if when is not None and (best is None or when < best):
                best = when
        after = self._idle_after
        last = profile.last_ts
        if after and last is not None and (self._idle_known_too or not profile.contacts):
            grain = self._idle_grain
            when = -(-(last + after) // grain) * grain  # InactivityPolicy.deadline
            if when <= now:  # already inactive (a late event): the next tick removes it
                when = now + 1
            if best is None or when < best:
                best = when
        return best

    def reevaluate(
        self, profile: Profile, now: int, trigger: str, reason: str, segment_ids: Iterable[str] | None = None
    ) -> list[Change]:
        """Evaluate ``segment_ids`` (default: all) and exit memberships of undefined segments."""
        wanted = (
            set(self.order)
            if segment_ids is None
            else self.planner.closure(set(segment_ids) & set(self.order))
        )
        if segment_ids is not None and profile.due and profile.due <= now:
            # a deadline has passed unseen: the clock-driven segments move too (due is reset below)
            wanted |= self.planner.timed
        changes = self._evaluate(profile, now, self.planner.plan(wanted), trigger, reason, None)
        for key in list(profile.members):
            segment_id, _, subject = key.partition(SUBJECT_SEP)
            if segment_id not in self.definitions and profile.is_member(key):
                changes.append(
                    self._flip(
                        profile,
                        key,
                        segment_id,
                        subject or None,
                        False,
                        now,
                        trigger,
                        reason,
                        None,
                        profile.versions.get(key, 0),
                    )
                )
        profile.due = self.next_deadline(profile, now) or 0
        return changes

    def release(self, merged: Profile, now: int, survivor: str) -> list[Change]:
        """The merged person exits everything it is a member of (its state moves to ``survivor``)."""
        return self._exit_all(merged, now, "merge", f"merged into person {survivor}")

    def erase(self, profile: Profile, now: int, request_id: str) -> list[Change]:
        """The person exits everything it is a member of: it is erased on request (docs/privacy.md)."""
        return self._exit_all(profile, now, "erasure", f"erased on request {request_id}")

    def retire(self, profile: Profile, now: int) -> list[Change]:
        """The person exits everything it is a member of: it is inactive (retention policy)."""
        policy = self.inactivity.describe() if self.inactivity is not None else "retention"
        return self._exit_all(profile, now, "retention", f"inactive: {policy}")

    def _exit_all(self, profile: Profile, now: int, trigger: str, reason: str) -> list[Change]:
        gone: list[Change] = []
        for key in sorted(profile.current_members()):
            segment_id, _, subject = key.partition(SUBJECT_SEP)
            gone.append(
                self._flip(
                    profile,
                    key,
                    segment_id,
                    subject or None,
                    False,
                    now,
                    trigger,
                    reason,
                    None,
                    profile.versions.get(key, 0),
                )
            )
        profile.due = 0
        return gone

    def absorb(self, survivor: Profile, merged: Profile, now: int) -> tuple[list[Change], list[Change]]:
        """Fold ``merged`` into ``survivor``: the merged person exits everything, the survivor is
        re-evaluated over both persons' state. Returns (merged person's changes, survivor's changes)."""
        gone = self.release(merged, now, survivor.person_id)
        combine(survivor, merged)
        changes = self.reevaluate(survivor, now, "merge", f"merged with person {merged.person_id}")
        return gone, changes

    # -- evaluation --------------------------------------------------------------------------------

    def _evaluate(
        self,
        profile: Profile,
        now: int,
        plan: tuple[PlanStep, ...],
        trigger: str,
        reason: str,
        message_id: str | None,
    ) -> list[Change]:
        if not plan:
            return []
        ev = Evaluation(profile, now)
        changes: list[Change] = []
        members, versions = profile.members, profile.versions
        evaluated = ev.member
        person_id = profile.person_id
        entered = exited = ""  # the changes' reasons, made at the first change
        for segment_id, test, version, definition in plan:
            if test is None:
                assert definition is not None
                changes.extend(
                    self._suppression(profile, definition, version, now, trigger, reason, message_id)
                )
                continue
            member = test(ev)
            evaluated[segment_id] = member
            seq = members.get(segment_id, 0)
            if member == (seq % 2 == 1):
                continue
            # a flip of the stored membership: entered on an odd transition count (segment ids are
            # interned when the engine is built, as _flip interns keys)
            seq += 1
            members[segment_id] = seq
            versions[segment_id] = version
            if not entered:
                entered, exited = f"entered: {reason}", f"exited: {reason}"
            changes.append(
                make_change(
                    person_id,
                    segment_id,
                    None,
                    member,
                    seq,
                    now,
                    trigger,
                    (entered if member else exited),
                    message_id,
                    version,
                )
            )
        # memberships of segments not evaluated in this pass are read by refs: fill them lazily
        return changes

    def _suppression(
        self,
        profile: Profile,
        definition: SegmentDefinition,
        version: int,
        now: int,
        trigger: str,
        reason: str,
        message_id: str | None,
    ) -> list[Change]:
        ledger = profile.ledger if definition.per == "product" else profile.category_ledger
        prefix = f"{definition.id}{SUBJECT_SEP}{definition.per}:"
        if definition.returns_exit:
            wanted = {key for key, (net, _) in ledger.items() if net > 0}
        else:
            wanted = {key for key, (_, bought) in ledger.items() if bought > 0}
        start = len(prefix)
        current = {
            key[start:] for key, seq in profile.members.items() if seq % 2 == 1 and key.startswith(prefix)
        }
        if wanted == current:
            return []
        changes = []
        for key in sorted(wanted - current):
            changes.append(
                self._flip(
                    profile,
                    prefix + key,
                    definition.id,
                    f"{definition.per}:{key}",
                    True,
                    now,
                    trigger,
                    reason,
                    message_id,
                    version,
                )
            )
        for key in sorted(current - wanted):
            changes.append(
                self._flip(
                    profile,
                    prefix + key,
                    definition.id,
                    f"{definition.per}:{key}",
                    False,
                    now,
                    trigger,
                    reason,
                    message_id,
                    version,
                )
            )
        return changes

    @staticmethod
    def _flip(
        profile: Profile,
        key: str,
        segment_id: str,
        subject: str | None,
        entered: bool,
        now: int,
        trigger: str,
        reason: str,
        message_id: str | None,
        version: int,
    ) -> Change:
        seq = profile.members.get(key, 0) + 1
        assert (seq % 2 == 1) == entered, "a membership flip must alternate"
        key = sys.intern(key)
        profile.members[key] = seq
        profile.versions[key] = version
        verb = "entered" if entered else "exited"
        return make_change(
            profile.person_id,
            segment_id,
            subject,
            entered,
            seq,
            now,
            trigger,
            f"{verb}: {reason}",
            message_id,
            version,
        )
