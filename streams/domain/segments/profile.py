"""The per-person state the segment engine keeps: features, traits, ledgers and memberships.

Only what conditions need is kept, incrementally:

- a windowed behaviour feature keeps the timestamps (and values) of its matching events inside its
  window, sorted; older ones are pruned as time passes (time only moves forward for one engine);
- an all-time feature keeps count, sum, min, max, first and last timestamps;
- purchases keep a per-product and per-category ledger (net and bought quantity), the newest
  ``KEPT_PURCHASES`` purchase times (for the usual repeat interval), a count and the net revenue;
- memberships keep, per segment (and subject), the transition count (odd means member) and the
  definition version of the last transition: two maps of small ints, no object per membership.

The JSON form (``to_json`` / ``from_json``) is what the segment worker writes to ``segments.state``.
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

# 2: ``members`` maps a key to its transition count and ``versions`` to the definition version (format 1
# kept ``members`` as key -> [count, time, version]; it is still read).
FORMAT = 2
READABLE_FORMATS = (1, 2)
KEPT_PURCHASES = 25
KEPT_MESSAGE_IDS = 64
MAX_TRAITS = 200


def message_hash(message_id: str) -> int:
    """A stable 64-bit hash of a message id (the duplicate check)."""
    return int.from_bytes(hashlib.blake2b(message_id.encode(), digest_size=8).digest(), "big", signed=True)


# Distinct event contexts (channel, device class, local hour, weekday, month) are few: one tuple each,
# shared by every profile, instead of a new one per event (less memory; fewer objects for the
# collector). Bounded, as channel and device come from the events.
_CONTEXTS: dict[tuple[Any, ...], tuple[Any, ...]] = {}
_MAX_CONTEXTS = 100_000


def shared_context(context: tuple[Any, ...]) -> tuple[Any, ...]:
    """The one shared instance of ``context`` (itself while fewer than ``_MAX_CONTEXTS`` are known)."""
    known = _CONTEXTS.get(context)
    if known is not None:
        return known
    if len(_CONTEXTS) < _MAX_CONTEXTS:
        _CONTEXTS[context] = context
    return context


@dataclass(slots=True)
class Profile:
    person_id: str
    first_seen: int | None = None
    last_ts: int | None = None
    # channel, device class, local hour, weekday (0 = Monday), month of the newest event
    last_context: tuple[Any, ...] | None = None
    # name -> [value, ts] and kind -> [value, ts], updated in place: most events repeat them with a
    # newer time, and a new pair per event was most of the objects the stage's collector walked
    traits: dict[str, list[Any]] = field(default_factory=dict)
    contacts: dict[str, list[Any]] = field(default_factory=dict)
    # purpose -> [granted, event time of the event that said it] (streams/domain/consent.py rules)
    consent: dict[str, list[Any]] = field(default_factory=dict)
    windowed: dict[str, array[int]] = field(default_factory=dict)  # feature -> sorted timestamps
    wvalues: dict[str, array[float]] = field(default_factory=dict)  # feature -> values (sum/min/max)
    totals: dict[str, list[Any]] = field(
        default_factory=dict
    )  # feature -> [count, sum, min, max, first, last]
    ledger: dict[str, list[float]] = field(default_factory=dict)  # product -> [net qty, bought qty]
    category_ledger: dict[str, list[float]] = field(default_factory=dict)
    purchases: list[int] = field(default_factory=list)  # newest KEPT_PURCHASES purchase times, sorted
    purchase_count: int = 0
    revenue: float = 0.0
    channel_counts: dict[str, int] = field(default_factory=dict)
    hour_counts: dict[str, int] = field(default_factory=dict)
    category_counts: dict[str, int] = field(default_factory=dict)
    brand_counts: dict[str, int] = field(default_factory=dict)
    # key -> transition count (odd: member), and key -> definition version at the last transition.
    # Two maps of (mostly cached) small ints: a tuple and a timestamp per membership were a third of
    # the profile's objects, and every state write walked them.
    members: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    seen: array[int] = field(default_factory=lambda: array("q"))  # hashes of the newest message ids
    due: int = 0  # the next time a clock-driven condition may change (0: none)
    offsets: dict[str, int] = field(default_factory=dict)  # the worker's: last applied offset per topic
    # Backfill of features new with a definition (streams/domain/segments/backfill.py): feature ->
    # [run id, next part] (next part -1: done), and feature -> hashes of the live events counted while
    # the feature awaited its backfill (the backfill skips them: none is counted twice).
    backfilled: dict[str, list[Any]] = field(default_factory=dict)
    backfill_live: dict[str, array[int]] = field(default_factory=dict)

    def is_member(self, key: str) -> bool:
        return self.members.get(key, 0) % 2 == 1

    def activation(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """What audiences read of the person besides memberships: contact values and consent decisions
        (compared before and after an event to know whether the audience writer must hear of it)."""
        return (
            tuple((kind, entry[0]) for kind, entry in self.contacts.items()),
            tuple((purpose, entry[0], entry[1]) for purpose, entry in self.consent.items()),
        )

    def current_members(self) -> list[str]:
        return [key for key, seq in self.members.items() if seq % 2 == 1]

    def to_json(self) -> bytes:
        # Every field by name (tests/unit/domain/segments/test_profile_state.py checks none is missing);
        # runs for every profile a checkpoint touched, and a literal dict is cheaper than a getattr loop.
        return orjson.dumps(
            {
                "person_id": self.person_id,
                "first_seen": self.first_seen,
                "last_ts": self.last_ts,
                "last_context": self.last_context,
                "traits": self.traits,
                "contacts": self.contacts,
                "consent": self.consent,
                "windowed": {k: v.tolist() for k, v in self.windowed.items()},
                "wvalues": {k: v.tolist() for k, v in self.wvalues.items()},
                "totals": self.totals,
                "ledger": self.ledger,
                "category_ledger": self.category_ledger,
                "purchases": self.purchases,
                "purchase_count": self.purchase_count,
                "revenue": self.revenue,
                "channel_counts": self.channel_counts,
                "hour_counts": self.hour_counts,
                "category_counts": self.category_counts,
                "brand_counts": self.brand_counts,
                "members": self.members,
                "versions": self.versions,
                "seen": self.seen.tolist(),
                "due": self.due,
                "offsets": self.offsets,
                "backfilled": self.backfilled,
                "backfill_live": {k: v.tolist() for k, v in self.backfill_live.items()},
                "format": FORMAT,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Profile:
        data = orjson.loads(raw)
        written = data.pop("format", 1)
        if written not in READABLE_FORMATS:
            raise ValueError(
                f"profile state format {written} is not one this version reads "
                f"({', '.join(map(str, READABLE_FORMATS))}): was it written by a newer omniseg?"
            )
        # JSON has lists where the profile keeps tuples and arrays: convert before constructing (a
        # compiled Profile checks its fields' types). Feature ids and membership keys repeat across
        # millions of profiles: share one string each.
        get = data.get
        data["windowed"] = {sys.intern(k): array("q", v) for k, v in get("windowed", {}).items()}
        data["wvalues"] = {sys.intern(k): array("d", v) for k, v in get("wvalues", {}).items()}
        data["totals"] = {sys.intern(k): v for k, v in get("totals", {}).items()}
        members = get("members", {})
        if written == 1:  # key -> [transition count, time, version]
            data["versions"] = {sys.intern(k): v[2] for k, v in members.items()}
            data["members"] = {sys.intern(k): v[0] for k, v in members.items()}
        else:
            data["members"] = {sys.intern(k): v for k, v in members.items()}
            data["versions"] = {sys.intern(k): v for k, v in get("versions", {}).items()}
        data["traits"] = {k: [v[0], v[1]] for k, v in get("traits", {}).items()}
        data["contacts"] = {sys.intern(k): [v[0], v[1]] for k, v in get("contacts", {}).items()}
        data["consent"] = {sys.intern(k): [bool(v[0]), v[1]] for k, v in get("consent", {}).items()}
        context = get("last_context")
        data["last_context"] = shared_context(tuple(context)) if context is not None else None
        data["seen"] = array("q", get("seen", ()))
        data["backfilled"] = {sys.intern(k): [v[0], v[1]] for k, v in get("backfilled", {}).items()}
        data["backfill_live"] = {sys.intern(k): array("q", v) for k, v in get("backfill_live", {}).items()}
        if "revenue" in data:
            data["revenue"] = float(data["revenue"])
        return cls(**data)
