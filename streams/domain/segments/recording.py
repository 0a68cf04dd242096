"""Recording an event into a profile: first/last seen, the newest context, traits and contacts,
preferred-* counts, purchases and returns with their per-product ledger, and the features it counts.

``Recorder.record`` returns the triggers the event fired (the derived traits whose value changed and
the features that counted it); the engine evaluates only the segments those triggers reach.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streams.domain.segments.compiler import DERIVED_TRIGGERS
from streams.domain.segments.derived import bump_count
from streams.domain.segments.events import PURCHASE_EVENTS, RETURN_EVENTS, event_revenue
from streams.domain.segments.features import Feature
from streams.domain.segments.preparation import Prepared
from streams.domain.segments.profile import KEPT_PURCHASES, MAX_TRAITS, Profile, shared_context

_CONTACT_KINDS = {
    "email": "email",
    "phone": "phone",
    "esp_subscriber_id": "espSubscriberId",
    "customer_id": "userId",
    "crm_id": "crmId",
    "loyalty_card": "loyaltyCard",
    "advertising_id": "advertisingId",
}


def keep_newest(entries: dict[str, list[Any]], key: str, value: Any, ts: int, limit: int) -> None:
    """Keep ``value`` as ``key``'s newest by event time (``[value, ts]``, updated in place); a new key
    only while fewer than ``limit`` are kept."""
    entry = entries.get(key)
    if entry is None:
        if len(entries) < limit:
            entries[key] = [value, ts]
    elif ts >= entry[1]:
        entry[0] = value
        entry[1] = ts


class Recorder:
    """Adds events to profiles for one set of compiled definitions."""

    def __init__(
        self, features: Iterable[Feature], by_trigger: Mapping[str, set[str]], needs_local_time: bool
    ) -> None:
        """``by_trigger``: the segments each trigger reaches (a derived trait nobody reads is not watched)."""
        self.needs_local_time = needs_local_time
        self.features_by_name: dict[str, list[Feature]] = {}
        for feature in features:
            for name in feature.names:
                self.features_by_name.setdefault(name, []).append(feature)
        # (event name, channel, has lines) -> the features such an event may match, in the order above
        self._matching: dict[
            tuple[str, str, int], tuple[tuple[Feature, Callable[[Prepared], float | None] | None], ...]
        ] = {}
        self.counts_hours = DERIVED_TRIGGERS["preferred_hour"] in by_trigger
        watched = {name for name, token in DERIVED_TRIGGERS.items() if token in by_trigger}
        self._watch_channel = "preferred_channel" in watched
        self._watch_category = "preferred_category" in watched
        self._watch_brand = "preferred_brand" in watched

    def record(
        self, profile: Profile, prepared: Prepared, now: int, matched: list[str] | None = None
    ) -> tuple[str, ...]:
        """Add the event to the profile; returns the triggers it fired: the derived traits whose value
        changed and the features that counted it (and adds the ids of those features to ``matched``,
        if given)."""
        event, ts = prepared.event, prepared.ts
        tokens: list[str] = []
        if profile.first_seen is None or ts < profile.first_seen:
            profile.first_seen = ts
            tokens.append("@first_seen")
        last_ts = profile.last_ts
        channel = event.channel
        if last_ts is None or ts >= last_ts:
            profile.last_ts = ts
            if self.needs_local_time:
                hour, weekday, month = prepared.local_time()
                profile.last_context = shared_context((channel, prepared.device, hour, weekday, month))
            else:
                profile.last_context = shared_context((channel, prepared.device, None, None, None))
        if bump_count(profile.channel_counts, channel) and self._watch_channel:
            tokens.append("@pref:channel")
        if self.counts_hours and bump_count(profile.hour_counts, f"{prepared.local_time()[0]:02d}"):
            tokens.append("@pref:hour")
        if event.traits:
            traits = profile.traits
            for key, value in event.traits.items():
                keep_newest(traits, key, value, ts, MAX_TRAITS)
        if event.identifiers:
            contacts = profile.contacts
            for identifier in event.identifiers:
                kind, _, value = identifier.partition(":")
                contact = _CONTACT_KINDS.get(kind)
                if contact is not None:
                    keep_newest(contacts, contact, value, ts, len(_CONTACT_KINDS))
        lines = prepared.lines
        for line in lines:
            if (
                line.category
                and bump_count(profile.category_counts, line.category)
                and self._watch_category
                and "@pref:category" not in tokens  # once, however many lines moved it
            ):
                tokens.append("@pref:category")
            if (
                line.brand
                and bump_count(profile.brand_counts, line.brand)
                and self._watch_brand
                and "@pref:brand" not in tokens
            ):
                tokens.append("@pref:brand")
        name = event.name
        # profile.revenue is net revenue (streams/domain/revenue.py): + a purchase's value, - a return's.
        if name in PURCHASE_EVENTS:
            profile.purchase_count += 1
            profile.revenue += event_revenue(event)
            bisect.insort(profile.purchases, ts)
            if len(profile.purchases) > KEPT_PURCHASES:
                del profile.purchases[: len(profile.purchases) - KEPT_PURCHASES]
            if lines:
                self._book(profile, prepared, 1.0)
        elif name in RETURN_EVENTS:
            profile.revenue -= event_revenue(event)
            if lines:
                self._book(profile, prepared, -1.0)
        if name in self.features_by_name:
            # 0: no lines; 1: only lines without category and brand (unknown products); 2: others
            shape = 1 if lines else 0
            for line in lines:
                if line.category_key or line.brand_key:
                    shape = 2
                    break
            index = (name, channel, shape)
            features = self._matching.get(index)
            if features is None:
                features = self._matching[index] = self._candidates(*index)
            for feature, match in features:
                value = 1.0 if match is None else match(prepared)
                if value is not None:
                    feature.add(profile, ts, value, now)
                    tokens.append(feature.trigger)
                    if matched is not None:
                        matched.append(feature.id)
        # No duplicates, and in an order fixed by what matched (derived triggers first, then features
        # in the order of the event's candidates): equal keys for equal events, without sorting.
        return tuple(tokens)

    def _candidates(
        self, name: str, channel: str, lines: int
    ) -> tuple[tuple[Feature, Callable[[Prepared], float | None] | None], ...]:
        """The features an event named ``name`` on ``channel`` with ``lines`` (0: none, 1: only of
        products without category and brand, 2: others) may match, with their match (None: every
        such event matches, counting 1)."""
        return tuple(
            (feature, None if feature.counts_all else feature.match)
            for feature in self.features_by_name.get(name, ())
            if (feature.channels is None or channel in feature.channels)
            and (feature.product is None or lines == 2 or (lines == 1 and feature.takes_blank_lines))
        )

    @staticmethod
    def _book(profile: Profile, prepared: Prepared, sign: float) -> None:
        for line in prepared.lines:
            for ledger, key in ((profile.ledger, line.product_id), (profile.category_ledger, line.category)):
                if key is None:
                    continue
                entry = ledger.get(key)
                if entry is None:
                    entry = ledger[key] = [0.0, 0.0]
                entry[0] += sign * line.quantity
                if sign > 0:
                    entry[1] += line.quantity
