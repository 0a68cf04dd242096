"""The audiences sink's rows: both delta tables, then the batch's frontier (migrations 0009, 0015)."""

from __future__ import annotations

import hashlib

import pytest

from streams.domain.audiences.deltas import Delta
from streams.domain.audiences.hashing import AudienceIdKind
from streams.sinks.audience_tables import AudienceBatch
from streams.wire.codecs import SerializationError

AT_MS = 1_790_000_000_000


def _delta(value: str, added: bool = True) -> Delta:
    return Delta("google", "vip", AudienceIdKind.EMAIL, hashlib.sha256(value.encode()).hexdigest(), added)


def test_a_batch_writes_members_then_deltas_then_its_frontier() -> None:
    batch = AudienceBatch()
    batch.add_delta(_delta("ann"), AT_MS, 7)
    batch.add_delta(_delta("bob"), AT_MS, 9)  # offset 8 was refused: it has no row anywhere
    batch.add_delta(_delta("ann", added=False), AT_MS, 12)
    tables = list(batch.tables())
    assert [name for name, _ in tables] == ["audience_members", "audience_deltas", "audience_frontier"]
    _, frontier = tables[2]
    assert frontier.names == ("frontier",) and frontier.columns == [[13]]
    offsets = tables[1][1].columns[tables[1][1].names.index("kafka_offset")]
    assert offsets == [7, 9, 12]


def test_an_empty_batch_writes_nothing_not_even_a_frontier() -> None:
    assert list(AudienceBatch().tables()) == []


def test_a_delta_the_readers_cannot_page_gets_no_row() -> None:
    batch = AudienceBatch()
    with pytest.raises(SerializationError, match="64 lower-case hex"):
        batch.add_delta(Delta("google", "vip", AudienceIdKind.EMAIL, "ABC", True), AT_MS, 1)
    assert len(batch) == 0
