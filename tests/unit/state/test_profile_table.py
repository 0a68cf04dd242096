"""The on-disk profile table, its unsaved records and the disk timers, on a real RocksDB store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.segments.profile import Profile
from streams.state.profile_table import PROFILE, DiskProfiles, Unsaved, key, put_record
from streams.state.rocks import Rdict, batch, open_store
from streams.state.timers import DiskTimers
from streams.wire.segments import encode_state


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Rdict]:
    store = open_store(tmp_path / "store")
    yield store
    store.close()


def _state(person: str, orders: int = 0, into: str | None = None) -> bytes:
    profile = None if into else Profile(person, purchase_count=orders)
    return encode_state(person, profile, into, 1_000)


def _table(
    db: Rdict, capacity: int, unsaved: Unsaved | None = None, gone: set[str] | None = None
) -> DiskProfiles:
    table = DiskProfiles(
        db, lambda person: len(person) % 2, capacity, unsaved or Unsaved(), (gone or set()).__contains__
    )
    table.owned = {0, 1}
    return table


def test_a_record_puts_the_profile_or_the_pointer_and_a_tombstone_removes_both(db: Rdict) -> None:
    wb = batch()
    put_record(wb, 0, "ann", _state("ann", 2))
    put_record(wb, 0, "bob", _state("bob", into="ann"))
    db.write(wb)
    assert db.get(key(PROFILE, 0, "ann")) is not None and db.get(key(PROFILE, 0, "bob")) is None
    wb = batch()
    put_record(wb, 0, "ann", None)
    db.write(wb)
    assert db.get(key(PROFILE, 0, "ann")) is None


def test_lookups_see_the_newest_unsaved_record_before_the_store(db: Rdict) -> None:
    wb = batch()
    put_record(wb, 1, "abc", _state("abc", 1))
    db.write(wb)
    unsaved = Unsaved()
    table = _table(db, 10, unsaved)
    profile = table.get("abc")
    assert profile is not None and profile.purchase_count == 1
    table.evict(lambda _p: False)
    unsaved.add("abc", _state("abc", 5), sealing=False)
    unsaved.close()
    unsaved.add("abc", _state("abc", 7), sealing=True)  # the sealing checkpoint's, newer
    table._cache.clear()
    assert table.get("abc").purchase_count == 7  # type: ignore[union-attr]
    table._cache.clear()
    unsaved.add("abc", None, sealing=False)  # erased in the current checkpoint
    assert table.get("abc") is None
    assert unsaved.take_oldest()["abc"] is not None and unsaved.find("abc") == (True, None)


def test_a_person_gone_or_of_a_partition_not_owned_has_no_profile(db: Rdict) -> None:
    wb = batch()
    put_record(wb, 1, "abc", _state("abc", 1))
    put_record(wb, 0, "ab", _state("ab", 1))
    db.write(wb)
    table = _table(db, 10, gone={"abc"})
    assert table.get("abc") is None
    table.drop({0})
    assert table.get("ab") is None and 0 not in table.owned


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["get", "touch", "write"]), st.integers(0, 40)), max_size=200),
    st.integers(1, 10),
)
def test_the_cache_stays_within_its_size_and_never_loses_a_pinned_profile(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]], capacity: int
) -> None:
    """Model: a dict of every profile's count. The table, with evictions after each step, answers
    the same, and holds at most ``capacity`` profiles besides pinned ones."""
    store = open_store(tmp_path_factory.mktemp("cache"))
    try:
        table = _table(store, capacity)
        model: dict[str, int] = {}
        pinned: set[str] = set()
        for action, n in steps:
            person = f"p{n}"
            if action == "get":
                profile = table.get(person)
                assert (profile.purchase_count if profile else None) == model.get(person)
            elif action == "touch":
                profile = table.get(person)
                if profile is None:
                    profile = table[person] = Profile(person)
                profile.purchase_count += 1
                model[person] = profile.purchase_count
                pinned.add(person)
            else:  # the touched profiles are written (acknowledged): they may leave memory now
                wb = batch()
                for p in pinned:
                    put_record(wb, len(p) % 2, p, encode_state(p, table.get(p), None, 1))
                store.write(wb)
                pinned.clear()
            table.evict(pinned.__contains__)
            assert len(table) <= capacity + len(pinned)
    finally:
        store.close()


def _one_partition(person: str) -> int:
    return 0


def test_disk_timers_fire_in_order_survive_a_reopen_and_forget_only_settled_entries(tmp_path: Path) -> None:
    path = tmp_path / "timers"
    db = open_store(path)
    timers = DiskTimers(db, _one_partition, {0})
    timers.schedule(300, "b")
    timers.schedule(100, "a")
    timers.schedule(10_000, "c")
    assert list(timers.due(500)) == [(100, "a"), (300, "b")]
    assert list(timers.due(600)) == []  # handed out once
    timers.schedule(50, "late")  # below the floor: stored at it, fires on the next call, real due kept
    assert list(timers.due(700)) == [(50, "late")]
    floor = timers.floor(0)
    wb = batch()
    timers.settle({0: 400}, wb)  # the checkpoint that fired "a" and "b" is acknowledged, not yet "late"'s
    db.write(wb)
    db.close()
    db = open_store(path)
    reopened = DiskTimers(db, _one_partition, {0})
    assert reopened.floor(0) == 400 < floor
    assert list(reopened.due(20_000)) == [(50, "late"), (10_000, "c")]  # fired again, not lost
    db.close()


def test_disk_timers_of_a_partition_not_owned_wait_for_it_to_come_back(db: Rdict) -> None:
    """A worker that lost a partition keeps its entries and floor: when the partition comes back after
    its other owner was killed before saving what fired there, the entries still fire here."""
    owned = {0, 1}
    timers = DiskTimers(db, lambda person: int(person[0]), owned)
    timers.schedule(100, "0-a")
    timers.schedule(200, "1-b")
    timers.schedule(900, "1-c")
    assert list(timers.due(50)) == []
    owned.discard(1)  # partition 1 revoked
    assert list(timers.due(1_000)) == [(100, "0-a")]
    wb = batch()
    timers.settle(timers.floors(), wb)  # only partition 0's floor moves
    db.write(wb)
    assert timers.floors() == {0: 1_001}
    owned.add(1)  # partition 1 back
    assert list(timers.due(1_000)) == [(200, "1-b"), (900, "1-c")]
    timers.schedule(300, "1-d")  # below partition 1's floor now: fires on the next call
    timers.schedule(300, "0-e")
    assert list(timers.due(1_100)) == [(300, "0-e"), (300, "1-d")]
    timers.forget(1)  # read in full next: its entries go, its floor starts again
    timers.schedule(150, "1-f")
    assert timers.floor(1) == 0
    assert list(timers.due(1_200)) == [(150, "1-f")]
