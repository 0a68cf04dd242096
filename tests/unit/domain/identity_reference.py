"""A deliberately naive reference model of the identity policy, for the property tests.

It shares no code with ``streams.domain.identity`` except the namespace constant. It keeps the
list of accepted links (edges) and recomputes every component by breadth-first search at every step,
and a person's id is *defined* as the oldest (first_seen, id) person seeded inside its component:
the implementation instead moves identifiers between persons at each merge. If the two agree on
random streams, the merge bookkeeping is right.

Outcomes are plain tuples:
``("created", person, seed_key, first_seen)``, ``("attached", person, key)``,
``("merged", survivor, merged, moved_keys, event_id, at_ms)``,
``("rejected", key, person, reason, conflicting_person, limit_kind)``.
"""

from __future__ import annotations

import uuid
from collections import deque

from streams.domain.identity import PERSON_NAMESPACE

RefOutcome = tuple[object, ...]


def kind_of(key: str) -> str:
    return key.split(":", 1)[0]


class ReferenceIdentity:
    def __init__(self, kinds: list[tuple[str, int | None]]) -> None:
        self.priority = [kind for kind, _ in kinds]
        self.limits = dict(kinds)
        self.known: set[str] = set()
        self.edges: list[tuple[str, str]] = []
        self.created: dict[str, tuple[str, int]] = {}  # person id -> (seed key, first_seen)
        self.merged_into: dict[str, str] = {}

    def component(self, key: str) -> frozenset[str]:
        seen = {key}
        queue = deque([key])
        while queue:
            node = queue.popleft()
            for a, b in self.edges:
                for here, there in ((a, b), (b, a)):
                    if here == node and there not in seen:
                        seen.add(there)
                        queue.append(there)
        return frozenset(seen)

    def components(self) -> set[frozenset[str]]:
        return {self.component(key) for key in self.known}

    def person(self, component: frozenset[str]) -> str:
        seeded = [(first, pid) for pid, (seed, first) in self.created.items() if seed in component]
        return min(seeded)[1]

    def persons(self) -> dict[str, frozenset[str]]:
        return {self.person(comp): comp for comp in self.components()}

    def canonical(self, person_id: str) -> str:
        return self.person(self.component(self.created[person_id][0]))

    def count(self, component: frozenset[str], kind: str) -> int:
        return sum(1 for key in component if kind_of(key) == kind)

    def within(self, component: frozenset[str], kind: str) -> bool:
        limit = self.limits[kind]
        return limit is None or self.count(component, kind) <= limit

    def has_room(self, component: frozenset[str], kind: str) -> bool:
        limit = self.limits[kind]
        return limit is None or self.count(component, kind) < limit

    def link(self, keys: list[str], at_ms: int, event_id: str | None) -> tuple[str, list[RefOutcome]]:
        usable = sorted(
            {key for key in keys if kind_of(key) in self.limits},
            key=lambda k: (self.priority.index(kind_of(k)), k),
        )
        disabled = []
        for key in keys:
            if kind_of(key) not in self.limits and key not in disabled:
                disabled.append(key)
        assert usable, "the tests never link an event without a usable identifier"
        out: list[RefOutcome] = []
        head = usable[0]
        if head in self.known:
            rep = head
        else:
            known = [key for key in usable if key in self.known]
            if known and self.has_room(self.component(known[0]), kind_of(head)):
                rep = known[0]
            else:
                pid = str(uuid.uuid5(PERSON_NAMESPACE, head))
                self.created[pid] = (head, at_ms)
                self.known.add(head)
                rep = head
                out.append(("created", pid, head, at_ms))
        for key in usable:
            mine = self.component(rep)
            anchor = self.person(mine)
            if key in mine:
                continue
            kind = kind_of(key)
            if key not in self.known:
                if self.has_room(mine, kind):
                    self.known.add(key)
                    self.edges.append((rep, key))
                    out.append(("attached", anchor, key))
                else:
                    out.append(("rejected", key, anchor, "limit", None, kind))
                continue
            theirs = self.component(key)
            other = self.person(theirs)
            union = mine | theirs
            broken = [k for k in self.priority if not self.within(union, k)]
            if broken:
                out.append(("rejected", key, anchor, "merge_limit", other, broken[0]))
                continue
            self.edges.append((rep, key))
            survivor = self.person(union)
            loser = other if survivor == anchor else anchor
            moved = theirs if loser == other else mine
            self.merged_into[loser] = survivor
            out.append(("merged", survivor, loser, tuple(sorted(moved)), event_id, at_ms))
        final = self.person(self.component(rep))
        for key in disabled:
            out.append(("rejected", key, final, "disabled", None, kind_of(key)))
        out = [(o[0], o[1], final, *o[3:]) if o[0] == "rejected" else o for o in out]
        return final, out
