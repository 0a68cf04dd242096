"""Single customer view queries: one person, found by any of its identifiers, from the identity tables.

Every query filters on a sorting key or on the person's own ids, so a lookup stays cheap on large tables
(the views of migration 0004 read whole tables and suit analysts' aggregate questions instead):

1. the identifier's newest owner: ``identities`` by ``identifier`` (or, when the assignment has not
   reached ClickHouse yet, the newest resolved event carrying it);
2. that owner's canonical person: follow ``person_aliases`` rows to the target that was not merged
   itself (the same rule as ``person_canonical``);
3. the person's ids: the canonical id plus every id whose alias row points at it (merge chains are
   closed, so one step finds them all);
4. identifiers, merges, rejections, per-channel activity and recent events filtered by those ids;
5. the canonical person's current segments (``segment_changes``, as ``person_segments`` reads them).
"""

from __future__ import annotations

from typing import Any

from clickhouse_driver import Client

from streams.domain.identifiers import Identifier
from streams.domain.person_view import (
    ChannelActivity,
    CurrentSegment,
    MergeRecord,
    PersonEvent,
    PersonIdentifier,
    PersonView,
    RejectionRecord,
)

# Merge chains are short (each step keeps an older person); this bounds a corrupt alias cycle.
_MAX_ALIAS_HOPS = 1000


class PersonNotFound(LookupError):
    """No person has the identifier; the message names the normalised key."""


class PersonStore:
    """Reads persons from ClickHouse through a client connected to the omniseg database."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._client.execute(sql, params)]

    def owner(self, identifier: Identifier) -> str | None:
        """The person id named by the identifier's newest assignment (maybe merged since)."""
        key = identifier.key
        rows = self._rows(
            "SELECT count(), argMax(person_id, version) FROM identities WHERE identifier = %(key)s",
            {"key": key},
        )
        if rows and rows[0][0]:
            return str(rows[0][1])
        rows = self._rows(
            "SELECT person_id FROM event_persons WHERE has(identifiers, %(key)s) "
            "ORDER BY resolved_at_ms DESC LIMIT 1",
            {"key": key},
        )
        return str(rows[0][0]) if rows else None

    def canonical(self, person_id: str) -> str:
        """The live person that ``person_id`` ended up in (itself when it was never merged)."""
        current = person_id
        for _ in range(_MAX_ALIAS_HOPS):
            targets = self._rows(
                "SELECT canonical_person_id, max(version) FROM person_aliases "
                "WHERE person_id = %(pid)s GROUP BY canonical_person_id",
                {"pid": current},
            )
            if not targets:
                return current
            merged = {
                str(row[0])
                for row in self._rows(
                    "SELECT DISTINCT person_id FROM person_aliases WHERE person_id IN %(ids)s",
                    {"ids": tuple(str(target) for target, _ in targets)},
                )
            }
            live = [(version, str(target)) for target, version in targets if str(target) not in merged]
            if live:
                return max(live)[1]
            # The newest merge of `current` has not reached ClickHouse yet: follow the chain one hop.
            current = max((version, str(target)) for target, version in targets)[1]
        raise RuntimeError(f"person_aliases: more than {_MAX_ALIAS_HOPS} hops from {person_id} (a cycle?)")

    def person_ids(self, canonical: str) -> tuple[str, ...]:
        """The canonical id first, then every id merged into it (directly or through a chain)."""
        rows = self._rows(
            "SELECT DISTINCT person_id FROM person_aliases WHERE canonical_person_id = %(pid)s "
            "ORDER BY person_id",
            {"pid": canonical},
        )
        return (canonical, *(str(row[0]) for row in rows if row[0] != canonical))

    def lookup(self, identifier: Identifier, events: int = 20) -> PersonView:
        """The single customer view of the person owning ``identifier``; raises :class:`PersonNotFound`."""
        owner = self.owner(identifier)
        if owner is None:
            raise PersonNotFound(f"no person has identifier {identifier.key}")
        canonical = self.canonical(owner)
        ids = self.person_ids(canonical)
        params = {"ids": ids, "limit": max(0, events)}
        identifiers = self._rows(
            "SELECT identifier, any(kind), any(value), min(first_seen), max(version), "
            "argMax(person_id, version) AS owner FROM identities "
            "WHERE identifier IN (SELECT identifier FROM identities WHERE person_id IN %(ids)s) "
            "GROUP BY identifier HAVING owner IN %(ids)s ORDER BY identifier",
            params,
        )
        merges = self._rows(
            "SELECT change_id, person_id, merged_person_id, merged_person_ids, identifiers, message_id, "
            "channel, at FROM identity_merges FINAL "
            "WHERE person_id IN %(ids)s OR merged_person_id IN %(ids)s ORDER BY at, change_id",
            params,
        )
        rejections = self._rows(
            "SELECT change_id, person_id, identifier, conflicting_person_id, reason, message_id, channel, "
            "at FROM identity_rejections FINAL "
            "WHERE person_id IN %(ids)s OR conflicting_person_id IN %(ids)s ORDER BY at, change_id",
            params,
        )
        channels = self._rows(
            "SELECT toString(channel) AS channel_name, count(), min(timestamp), max(timestamp) "
            "FROM event_persons FINAL WHERE person_id IN %(ids)s GROUP BY channel_name ORDER BY channel_name",
            params,
        )
        recent = self._rows(
            "SELECT message_id, toString(channel), toString(type), event, name, timestamp, person_id, "
            "revenue, currency FROM event_persons FINAL WHERE person_id IN %(ids)s "
            "ORDER BY timestamp DESC, message_id DESC LIMIT %(limit)s",
            params,
        )
        # Lazy: streams.warehouse.segments reads persons through this module.
        from streams.warehouse.segments import person_segments

        current = person_segments(self._client, canonical, history=0).current
        return PersonView(
            looked_up=identifier.key,
            person_id=canonical,
            person_ids=ids,
            identifiers=tuple(
                PersonIdentifier(str(key), str(kind), str(value), first, int(version), str(assigned))
                for key, kind, value, first, version, assigned in identifiers
            ),
            merges=tuple(
                MergeRecord(cid, survivor, merged, tuple(merged_ids), tuple(moved), mid, channel, at)
                for cid, survivor, merged, merged_ids, moved, mid, channel, at in merges
            ),
            rejections=tuple(RejectionRecord(*row) for row in rejections),
            channels=tuple(ChannelActivity(str(c), int(n), first, last) for c, n, first, last in channels),
            recent_events=tuple(
                PersonEvent(mid, channel, kind, event, name, ts, pid, float(revenue), currency)
                for mid, channel, kind, event, name, ts, pid, revenue, currency in recent
            ),
            segments=tuple(CurrentSegment(m.segment_id, m.subject, m.since) for m in current),
        )
