"""Backfill: features that a new definition needs and no earlier definition kept, filled from history.

A feature starts counting when the engine that has it is built; the events a person had before are in
the warehouse. A backfill run reads them, keeps what each new feature would have counted
(:func:`history_entries`: the event time, the value and the message id's hash), and hands each person's
entries to the person's owner as :class:`BackfillBatch` records, in parts. The owner adds them to the
profile (:func:`apply_backfill`) and re-evaluates the segments that read those features; the changes
this causes carry the trigger ``backfill``.

Invariants (tests/unit/domain/segments/test_backfill_properties.py):

- After the backfill, the feature holds what it would hold had it counted every event from the start:
  history entries of events the live stream already counted are recognised by their message hash
  (``Profile.backfill_live``, recorded while the feature awaits its backfill) and skipped.
- A part is applied once: ``Profile.backfilled`` keeps, per feature and addressed person, the run and
  the next part it expects (-1 once the last part is in), so a part delivered again (a crash of the
  owner or of the job) changes nothing. A feature is backfilled by one run only: a record of another
  run is ignored. The key is the feature id for the profile's own person, and ``feature\x1fperson``
  for a part addressed to a person merged into it since the run read the history (forwarded to it).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from streams.domain.segments.events import SegmentEvent
from streams.domain.segments.features import Feature
from streams.domain.segments.preparation import Prepared, ProductLookup
from streams.domain.segments.profile import Profile, message_hash

DONE = -1
SEP = "\x1f"
# Live events remembered per feature while it awaits its backfill. The backfill reads history only up
# to the positions the segment stage had applied when it started (streams/stages/segments/backfill.py),
# so the overlap is the events applied between the definition going live and that moment.
KEPT_LIVE = 2_000

# (event time ms, value, message hash)
Entry = tuple[int, float, int]


@dataclass(frozen=True, slots=True)
class BackfillBatch:
    """One part of one person's backfill: the entries of every feature the run fills."""

    run_id: str
    person_id: str  # the person the run addressed (the canonical person when it read the history)
    part: int  # 0, 1, ... in order on the person's partition
    last: bool  # no part follows for this person
    features: tuple[str, ...]  # every feature the run fills (also those with no entries here)
    entries: Mapping[str, tuple[Entry, ...]]  # feature -> its entries in this part

    def entry_count(self) -> int:
        return sum(len(found) for found in self.entries.values())


class HistoryCounter:
    """What each of a run's features counts of one person's history, event by event, each message once.

    An event only a plain count reads (no filter but its name and channel) counts 1 without being built:
    ``add`` takes the event's name, channel and time, and a maker called only when a filter needs it."""

    def __init__(
        self,
        features: Iterable[Feature],
        lookup: ProductLookup | None,
        *,
        timezone: str = "UTC",
        hemisphere: str = "north",
    ) -> None:
        self.features = list(features)
        self._lookup = lookup.lookup if lookup is not None else None
        self._timezone, self._hemisphere = timezone, hemisphere
        self._by_name: dict[str, list[Feature]] = {}
        for feature in self.features:
            for name in feature.names:
                self._by_name.setdefault(name, []).append(feature)
        self.names = frozenset(self._by_name)
        self.found: dict[str, list[Entry]] = {}
        self._seen: set[int] = set()

    def start(self) -> dict[str, list[Entry]]:
        """Begin a new person; returns the entries the following ``add`` calls fill."""
        self.found = {feature.id: [] for feature in self.features}
        self._seen = set()
        return self.found

    def add(
        self, message_id: str, ts: int, name: str, channel: str, make: Callable[[], SegmentEvent]
    ) -> None:
        candidates = self._by_name.get(name)
        if not candidates:
            return
        digest = message_hash(message_id)
        if digest in self._seen:
            return
        self._seen.add(digest)
        prepared: Prepared | None = None
        found = self.found
        for feature in candidates:
            if feature.channels is not None and channel not in feature.channels:
                continue
            if feature.counts_all:
                found[feature.id].append((ts, 1.0, digest))
                continue
            if prepared is None:
                prepared = Prepared(make(), ts, self._lookup, self._timezone, self._hemisphere)
            value = feature.match(prepared)
            if value is not None:
                found[feature.id].append((ts, value, digest))


def history_entries(
    features: Iterable[Feature],
    events: Iterable[SegmentEvent],
    lookup: ProductLookup | None,
    *,
    timezone: str = "UTC",
    hemisphere: str = "north",
) -> dict[str, list[Entry]]:
    """What each of ``features`` counts of ``events`` (one person's history), each message once."""
    counter = HistoryCounter(features, lookup, timezone=timezone, hemisphere=hemisphere)
    found = counter.start()
    for event in events:
        counter.add(event.message_id, event.timestamp_ms, event.name, event.channel, _given(event))
    return found


def _given(event: SegmentEvent) -> Callable[[], SegmentEvent]:
    return lambda: event


def split_parts(
    run_id: str,
    person_id: str,
    features: tuple[str, ...],
    entries: Mapping[str, list[Entry]],
    per_part: int,
) -> list[BackfillBatch]:
    """One person's entries as parts of at most ``per_part`` entries (at least one part, maybe empty)."""
    flat = [(fid, entry) for fid in features for entry in entries.get(fid, ())]
    chunks = [flat[start : start + per_part] for start in range(0, len(flat), per_part)] or [[]]
    parts = []
    for index, chunk in enumerate(chunks):
        grouped: dict[str, list[Entry]] = {}
        for fid, entry in chunk:
            grouped.setdefault(fid, []).append(entry)
        parts.append(
            BackfillBatch(
                run_id,
                person_id,
                index,
                index == len(chunks) - 1,
                features,
                {fid: tuple(found) for fid, found in grouped.items()},
            )
        )
    return parts


def mark_key(feature_id: str, profile: Profile, person_id: str) -> str:
    """The ``Profile.backfilled`` key of ``person_id``'s parts for ``feature_id``."""
    return feature_id if person_id == profile.person_id else f"{feature_id}{SEP}{person_id}"


def is_backfilled(profile: Profile, feature_id: str) -> bool:
    mark = profile.backfilled.get(feature_id)
    return mark is not None and mark[1] == DONE


def note_live(profile: Profile, feature_ids: Iterable[str], digest: int) -> None:
    """Remember that the live stream counted message ``digest`` in features still awaiting backfill."""
    for fid in feature_ids:
        live = profile.backfill_live.get(fid)
        if live is None:
            live = profile.backfill_live[fid] = array("q")
        live.append(digest)
        if len(live) > KEPT_LIVE:
            del live[: len(live) - KEPT_LIVE]


def apply_backfill(
    features: Mapping[str, Feature], profile: Profile, batch: BackfillBatch, now: int
) -> tuple[list[str], int]:
    """Add ``batch`` to ``profile``: (the features it filled, the entries it added). A part already
    applied, of another run, or out of order fills nothing."""
    filled: list[str] = []
    added = 0
    for fid in batch.features:
        feature = features.get(fid)
        if feature is None:
            continue  # no definition uses it any more
        key = mark_key(fid, profile, batch.person_id)
        mark = profile.backfilled.get(key)
        if (mark is None and batch.part != 0) or (mark is not None and mark != [batch.run_id, batch.part]):
            continue
        live = profile.backfill_live.get(fid)
        skip = set(live) if live else ()
        for ts, value, digest in batch.entries.get(fid, ()):
            if digest in skip:
                continue
            feature.add(profile, ts, value, now)
            added += 1
        if batch.last:
            profile.backfilled[key] = [batch.run_id, DONE]
            if key == fid:
                profile.backfill_live.pop(fid, None)
        else:
            profile.backfilled[key] = [batch.run_id, batch.part + 1]
        filled.append(fid)
    return filled, added


def forget_live(profile: Profile, ended: frozenset[str], features: Mapping[str, Feature]) -> None:
    """Drop the live hashes of features whose backfill run ended (this person had no history for them)
    or that no definition uses any more."""
    for fid in [fid for fid in profile.backfill_live if fid in ended or fid not in features]:
        del profile.backfill_live[fid]
