"""Profile merge: when identity resolution merges two persons, the survivor takes the merged state."""

from __future__ import annotations

from array import array

from streams.domain.consent import Decision, newer
from streams.domain.segments.profile import KEPT_MESSAGE_IDS, KEPT_PURCHASES, Profile


def combine(survivor: Profile, merged: Profile) -> None:
    """Add ``merged``'s state to ``survivor`` (memberships excepted)."""
    for key, times in merged.windowed.items():
        values = merged.wvalues.get(key)
        mine = survivor.windowed.get(key)
        mine_values = survivor.wvalues.get(key)
        pairs = sorted(
            [
                *zip(mine or (), mine_values or [0.0] * len(mine or ()), strict=True),
                *zip(times, values or [0.0] * len(times), strict=True),
            ],
            key=lambda p: p[0],
        )
        survivor.windowed[key] = array("q", [int(p[0]) for p in pairs])
        if values is not None or mine_values is not None:
            survivor.wvalues[key] = array("d", [p[1] for p in pairs])
    for key, total in merged.totals.items():
        have = survivor.totals.get(key)
        if have is None:
            survivor.totals[key] = list(total)
        else:
            survivor.totals[key] = [
                have[0] + total[0],
                have[1] + total[1],
                min(have[2], total[2]),
                max(have[3], total[3]),
                min(have[4], total[4]),
                max(have[5], total[5]),
            ]
    for mine_map, other_map in ((survivor.traits, merged.traits), (survivor.contacts, merged.contacts)):
        for key, entry in other_map.items():
            current = mine_map.get(key)
            if current is None or entry[1] > current[1]:
                mine_map[key] = [entry[0], entry[1]]  # a copy: entries are updated in place
    for purpose, (granted, at) in merged.consent.items():
        current = survivor.consent.get(purpose)
        if current is None or newer(Decision(current[0], current[1]), Decision(granted, at)):
            survivor.consent[purpose] = [granted, at]
    for ledger, other in (
        (survivor.ledger, merged.ledger),
        (survivor.category_ledger, merged.category_ledger),
    ):
        for key, (net, bought) in other.items():
            booked = ledger.setdefault(key, [0.0, 0.0])
            booked[0] += net
            booked[1] += bought
    for counts, other_counts in (
        (survivor.channel_counts, merged.channel_counts),
        (survivor.hour_counts, merged.hour_counts),
        (survivor.category_counts, merged.category_counts),
        (survivor.brand_counts, merged.brand_counts),
    ):
        for key, value in other_counts.items():
            counts[key] = counts.get(key, 0) + value
    survivor.purchases = sorted(survivor.purchases + merged.purchases)[-KEPT_PURCHASES:]
    survivor.purchase_count += merged.purchase_count
    survivor.revenue += merged.revenue
    if merged.first_seen is not None and (
        survivor.first_seen is None or merged.first_seen < survivor.first_seen
    ):
        survivor.first_seen = merged.first_seen
    if merged.last_ts is not None and (survivor.last_ts is None or merged.last_ts > survivor.last_ts):
        survivor.last_ts = merged.last_ts
        survivor.last_context = merged.last_context
    survivor.seen = array("q", [*survivor.seen, *merged.seen][-KEPT_MESSAGE_IDS:])
    # Backfill (streams/domain/segments/backfill.py): live events either person counted are skipped by
    # the survivor's backfill; the marks are per addressed person, so both persons' parts apply once.
    for fid, live in merged.backfill_live.items():
        survivor.backfill_live[fid] = array("q", [*survivor.backfill_live.get(fid, ()), *live])
    for fid, mark in merged.backfilled.items():
        survivor.backfilled.setdefault(fid, list(mark))
