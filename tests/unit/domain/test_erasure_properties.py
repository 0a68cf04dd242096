"""Property tests: an erasure removes exactly the person's component from the link state, and the records
the link writer publishes (with the erasure's tombstones) rebuild the state that remains."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.domain.identifiers import Identifier
from streams.domain.identity import IdentityRules, PersonRecord
from streams.domain.privacy import suppression_key
from streams.domain.resolution import LinkState
from tests.unit.domain.test_identity_properties import (
    STORAGES,
    identifiers,
    link_storage,
    rules_strategy,
    stream_strategy,
)

Replica = tuple[dict[str, tuple[str, int]], dict[str, PersonRecord]]


def _publish(replica: Replica, assignments: list[dict], persons: list[dict]) -> None:
    owners, records = replica
    for row in assignments:
        owners[row["identifier"]] = (row["personId"], row["firstSeen"])
    for row in persons:
        records[row["personId"]] = PersonRecord(row["firstSeen"], row["mergedInto"])


@pytest.mark.parametrize("storage", STORAGES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_erasure_removes_exactly_the_persons_component(storage: str, data: st.DataObject) -> None:
    with link_storage(storage) as (tables, flush):
        _erasure_removes_exactly_the_persons_component(
            data, LinkState.on(tables, data.draw(rules_strategy())), flush
        )


def _erasure_removes_exactly_the_persons_component(
    data: st.DataObject, state: LinkState, flush: Callable[[], None]
) -> None:
    rules: IdentityRules = state.graph.rules
    stream = data.draw(stream_strategy(rules))
    erase_at = data.draw(st.integers(0, len(stream)))
    target: Identifier = data.draw(identifiers)
    suppress = data.draw(st.booleans())
    replica: Replica = ({}, {})
    erased_keys: set[str] = set()
    for index, (ids, at) in enumerate(stream):
        if index == erase_at:
            erased_keys |= _erase(state, replica, target, suppress)
        live = [i for i in ids if i.kind in set(rules.kinds())]
        if suppress and any(i.key in erased_keys for i in live):
            continue  # suppressed: the link writer drops the event
        result = state.apply(ids, at, f"m{index}", None, version=index)
        _publish(replica, result.assignments, result.persons)
        if index % 2:
            flush()
    if erase_at == len(stream):
        erased_keys |= _erase(state, replica, target, suppress)
    owners, records = state.graph.records()
    # The published records, tombstones applied, are the state: a rebuild from them is the same state.
    assert {k: v[0] for k, v in replica[0].items()} == owners
    assert replica[1] == records
    rebuilt = LinkState.from_records(replica[0], replica[1], rules)
    assert rebuilt.graph.records() == (owners, records)
    assert sorted(rebuilt.lineage) == sorted(k for k, v in state.lineage.items() if v)
    if suppress:
        assert not erased_keys & set(owners)


def _erase(state: LinkState, replica: Replica, target: Identifier, suppress: bool) -> set[str]:
    graph = state.graph
    person = graph.person_of(target)
    before_owners, before_records = graph.records()
    if person is None:
        result = state.erase("no-such-person", "r1", 0, suppress)
        assert result.identifiers == [] and result.person_ids == ["no-such-person"]
        assert graph.records() == (before_owners, before_records)
        return set()
    component = {key for key, owner in before_owners.items() if owner == person}
    ids = {pid for pid in before_records if graph.canonical(pid) == person}
    result = state.erase(data_id := sorted(ids)[-1], "r1", 7, suppress)
    assert data_id in ids
    assert set(result.identifiers) == component
    assert set(result.person_ids) == ids
    assert [c["personId"] for c in result.changes] == sorted(ids)
    assert all(c["kind"] == "erased" and c["mergedPersonIds"] == sorted(ids) for c in result.changes)
    assert all(c["identifiers"] == [] for c in result.changes)  # no identifier leaves on the change
    expected = {suppression_key(k) for k in component} if suppress else set()
    assert {key for key, _ in result.suppressions} == expected
    owners, records = graph.records()
    assert owners == {k: v for k, v in before_owners.items() if k not in component}
    assert records == {p: r for p, r in before_records.items() if p not in ids}
    for key in component:
        del replica[0][key]
    for pid in ids:
        del replica[1][pid]
    return component
