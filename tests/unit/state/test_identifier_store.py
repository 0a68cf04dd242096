"""The identity state store: a bounded cache in front of RocksDB, pending writes, checkpoints, slots."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from streams.domain.identifiers import Identifier, IdKind
from streams.domain.identity import IdentityGraph, PersonRecord
from streams.domain.resolution import LinkState, MemoryLinkStorage
from streams.state.identifiers import KEYS, PERSON, TEXT, StoredLinkTables, open_slot


def test_memory_entries_never_exceed_the_cache_size_and_evicted_reads_come_from_disk(tmp_path: Path) -> None:
    store = open_slot(tmp_path, "resolver", "g")
    table = store.table(b"o", TEXT, 100)
    for start in range(0, 5_000, 500):
        for n in range(start, start + 500):
            table[f"anonymous_id:{n}"] = f"person-{n % 97}"
        store.flush()
    assert len(table) == 5_000
    rng = random.Random(3)
    reads_before = table.disk_reads
    for _ in range(20_000):
        n = rng.randrange(6_000)
        expected = f"person-{n % 97}" if n < 5_000 else None
        assert table.get(f"anonymous_id:{n}") == expected
        assert table.in_memory() <= 100
    assert table.disk_reads - reads_before > 15_000  # most keys were evicted: read back from disk
    store.close()


def test_a_hot_key_stays_cached(tmp_path: Path) -> None:
    store = open_slot(tmp_path, "resolver", "g")
    table = store.table(b"o", TEXT, 10)
    for n in range(100):
        table[f"k{n}"] = "p"
    store.flush()
    table.get("k1")
    reads = table.disk_reads
    for n in range(50):
        table.get(f"k{n}")
        table.get("k1")
    assert table.disk_reads == reads + 49  # every other key once; k1 never again
    store.close()


def test_discarded_writes_leave_no_trace_in_cache_or_disk(tmp_path: Path) -> None:
    store = open_slot(tmp_path, "link-writer", "g")
    members = store.table(b"m", KEYS, 10)
    members["p1"] = ["email:a@x.io"]
    store.flush()
    keys = members["p1"]  # cached
    keys.append("email:b@x.io")  # mutated in place and written back, as the graph does
    members["p1"] = keys
    members["p2"] = ["email:c@x.io"]
    assert len(members) == 2 and members["p1"] == ["email:a@x.io", "email:b@x.io"]
    store.discard()
    assert members["p1"] == ["email:a@x.io"]
    assert "p2" not in members and len(members) == 1


def test_entries_counts_and_checkpoint_survive_a_reopen(tmp_path: Path) -> None:
    store = open_slot(tmp_path, "link-writer", "g")
    persons = store.table(b"p", PERSON, 4)
    persons["a"] = PersonRecord(5, None)
    persons["b"] = PersonRecord(-7, "a")
    store.set_meta("applied", 42)
    store.flush()
    del persons["a"]
    store.flush()
    store.close()
    again = open_slot(tmp_path, "link-writer", "g")
    persons = again.table(b"p", PERSON, 4)
    assert dict(persons) == {"b": PersonRecord(-7, "a")} and len(persons) == 1
    assert again.meta("applied") == 42
    assert again.path == tmp_path / "link-writer" / "g" / "slot-0"
    again.close()


def test_each_process_on_a_host_gets_its_own_slot(tmp_path: Path) -> None:
    first = open_slot(tmp_path, "resolver", "identity.resolver")
    second = open_slot(tmp_path, "resolver", "identity.resolver")
    assert first.path.name == "slot-0" and second.path.name == "slot-1"
    first.close()
    third = open_slot(tmp_path, "resolver", "identity.resolver")
    assert third.path.name == "slot-0"  # a restarted worker takes the free slot back
    second.close()
    third.close()


def test_iteration_merges_disk_and_pending_writes(tmp_path: Path) -> None:
    store = open_slot(tmp_path, "resolver", "g")
    table = store.table(b"o", TEXT, 2)
    other = store.table(b"p", TEXT, 2)
    table["a"], table["b"], other["z"] = "1", "2", "9"
    store.flush()
    table["c"] = "3"
    del table["a"]
    assert sorted(table) == ["b", "c"] and sorted(other) == ["z"]
    with pytest.raises(KeyError):
        del table["a"]


def test_link_state_on_disk_restarts_with_the_same_graph(tmp_path: Path) -> None:
    def events() -> list[list[Identifier]]:
        rng = random.Random(11)
        kinds = [IdKind.CUSTOMER_ID, IdKind.EMAIL, IdKind.DEVICE_ID, IdKind.ANONYMOUS_ID]
        return [
            [Identifier(rng.choice(kinds), f"v{rng.randrange(300)}") for _ in range(rng.randrange(1, 4))]
            for _ in range(2_000)
        ]

    memory = LinkState.on(MemoryLinkStorage(), IdentityGraph().rules)
    store = open_slot(tmp_path, "link-writer", "g")
    tables = StoredLinkTables(store, 1_000)
    disk = LinkState.on(tables, IdentityGraph().rules)
    stream = events()
    for n, ids in enumerate(stream[:1_000]):
        assert disk.apply(ids, n, f"m{n}", None, n) == memory.apply(ids, n, f"m{n}", None, n)
        if n % 50 == 0:
            store.flush()
    store.flush()
    assert store.in_memory() <= 1_000
    store.close()
    store = open_slot(tmp_path, "link-writer", "g")
    disk = LinkState.on(StoredLinkTables(store, 1_000), IdentityGraph().rules)
    assert disk.graph.records() == memory.graph.records()
    assert dict(disk.lineage) == dict(memory.lineage)
    for n, ids in enumerate(stream[1_000:], start=1_000):
        assert disk.apply(ids, n, f"m{n}", None, n) == memory.apply(ids, n, f"m{n}", None, n)
    assert disk.graph.records() == memory.graph.records()
    assert len(disk.graph) == len(memory.graph) and disk.graph.person_count == memory.graph.person_count
    store.close()
