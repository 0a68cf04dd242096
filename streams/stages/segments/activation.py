"""What the segment stage tells the audience writer, and the consent it keeps per person.

The segment stage holds each person's memberships, contact identifiers and consent; audiences for ad
platforms are computed from exactly those (docs/decisions/0013-audiences-for-ad-platforms.md). This
module turns them into ``audiences.inputs`` records:

- every membership change of a segment some destination reads (``MembershipChange``, with the
  transition's ``seq``); when a segment starts being read, every membership the profiles hold of it;
- the person's audience identifiers and consent, whole (``PersonUpdate``), whenever either changes
  while the person holds a membership of a read segment (entered or exited), and with its first one:
  the writer needs no facts of anybody else;
- ``PersonRemoved`` when the person is merged into another one.

All are idempotent for the writer (a repeated membership has an old ``seq``; an update replaces the
person's facts whole), so replays after a crash repeat them harmlessly. A person who never had an
audience identifier is not sent: without one it contributes to no audience, and its first identifier
sends its consent with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from streams.domain.audiences.hashing import AudienceIdKind
from streams.domain.audiences.state import PersonRemoved, PersonUpdate
from streams.domain.consent import ConsentPolicy, ConsentValueError, Decision, newer
from streams.domain.segments.changes import Change
from streams.domain.segments.engine import SUBJECT_SEP
from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.profile import Profile
from streams.domain.segments.recovery import membership_key
from streams.wire.audiences import encode_input, encode_membership

# Profile contact kind -> the identifier kind an ad platform may receive.
AUDIENCE_CONTACTS = {
    "email": AudienceIdKind.EMAIL,
    "phone": AudienceIdKind.PHONE,
    "userId": AudienceIdKind.EXTERNAL_ID,
    "advertisingId": AudienceIdKind.MOBILE_ADVERTISING_ID,
}

Facts = tuple[tuple[tuple[str, str], ...], tuple[tuple[str, bool, int], ...]]


def facts(profile: Profile) -> Facts:
    """The person's audience identifiers and consent, comparable before and after an event."""
    contacts = profile.contacts
    return (
        tuple((kind, contacts[kind][0]) for kind in AUDIENCE_CONTACTS if kind in contacts),
        tuple((purpose, entry[0], entry[1]) for purpose, entry in sorted(profile.consent.items())),
    )


class ActivationFeed:
    """Builds the stage's ``audiences.inputs`` records and records the consent events state."""

    def __init__(self, topic: str, policy: ConsentPolicy) -> None:
        self.topic = topic
        self.policy = policy
        # The segments some destination reads (streams/stages/segments/audience_reads.py).
        self.reads: frozenset[str] = frozenset()
        self.refused_consent = 0  # events whose consent was not a map of booleans (not read)

    def record_consent(self, profile: Profile, event: SegmentEvent) -> None:
        """Fold the consent the event states (CMP categories, ``traits.consent``) into the profile:
        per purpose the newest by event time, a refusal winning a tie (streams/domain/consent.py)."""
        stated_traits = event.traits.get("consent") if event.traits else None
        if not event.consent and stated_traits is None:
            return
        try:
            stated = self.policy.statement(event.consent, event.timestamp_ms) if event.consent else {}
            if isinstance(stated_traits, dict):
                for purpose, decision in self.policy.statement(stated_traits, event.timestamp_ms).items():
                    if newer(stated.get(purpose), decision):
                        stated[purpose] = decision
        except ConsentValueError:
            self.refused_consent += 1  # intake refuses these; a direct producer's are not read
            return
        consent = profile.consent
        for purpose, decision in stated.items():
            entry = consent.get(purpose)
            if entry is None or newer(Decision(entry[0], entry[1]), decision):
                consent[purpose] = [decision.granted, decision.at]

    def reads_any(self, profile: Profile) -> bool:
        """Whether the person holds a membership (entered or exited) of a segment some destination
        reads: the writer then has its facts, and must hear when they change."""
        reads = self.reads
        return bool(reads) and any(key.partition(SUBJECT_SEP)[0] in reads for key in profile.members)

    def memberships(
        self, profile: Profile, changes: Sequence[Change], now: int
    ) -> list[tuple[str, bytes, bytes]]:
        """The changes of read segments; led by the person's facts when they are its first memberships
        of read segments (the writer has no facts of a person before)."""
        reads = self.reads
        if not reads:
            return []
        topic = self.topic
        records = [
            (
                topic,
                change.person_id.encode(),
                encode_membership(change.person_id, change.segment_id, change.subject, change.seq, now),
            )
            for change in changes
            if change.segment_id in reads
        ]
        if records and self._first_reads(profile, changes) and facts(profile)[0]:
            records.insert(0, self.person(profile, now))
        return records

    def _first_reads(self, profile: Profile, changes: Iterable[Change]) -> bool:
        """Whether the profile's memberships of read segments all began with ``changes`` (already
        applied to it): then the writer has had no facts of the person."""
        reads, began = self.reads, set()
        for change in changes:
            if change.segment_id in reads and change.seq == 1:
                began.add(membership_key(change.segment_id, change.subject))
        return all(key in began for key in profile.members if key.partition(SUBJECT_SEP)[0] in reads)

    def person(self, profile: Profile, now: int) -> tuple[str, bytes, bytes]:
        identifiers, consent = facts(profile)
        update = PersonUpdate(
            profile.person_id,
            {AUDIENCE_CONTACTS[kind]: (value,) for kind, value in identifiers},
            {purpose: Decision(granted, at) for purpose, granted, at in consent},
        )
        return (self.topic, profile.person_id.encode(), encode_input(update, _moment(now)))

    def removed(self, person_id: str, now: int) -> tuple[str, bytes, bytes]:
        return (self.topic, person_id.encode(), encode_input(PersonRemoved(person_id), _moment(now)))

    def resync(self, profile: Profile, now: int) -> list[tuple[str, bytes, bytes]]:
        """Everything the writer holds of the person, again: after a restore that took over changes
        published before a crash, whose audience inputs may not have been sent."""
        return self.held(profile, self.reads, now)

    def held(self, profile: Profile, segments: frozenset[str], now: int) -> list[tuple[str, bytes, bytes]]:
        """Every membership the profile holds of ``segments``, entered or exited (its newest ``seq``),
        led by its facts: sent when a segment starts being read, so that the writer has the segment's
        memberships whatever it was told before."""
        if not segments:
            return []
        records = []
        key_bytes = profile.person_id.encode()
        for key, seq in sorted(profile.members.items()):
            segment_id, _, subject = key.partition(SUBJECT_SEP)
            if segment_id in segments:
                value = encode_membership(profile.person_id, segment_id, subject or None, seq, now)
                records.append((self.topic, key_bytes, value))
        if records and facts(profile)[0]:
            records.insert(0, self.person(profile, now))
        return records


def _moment(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, UTC)


def has_audience_identifiers(value: Facts) -> bool:
    return bool(value[0])
