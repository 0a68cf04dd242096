"""Identity topic records -> ClickHouse columns (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from streams.sinks.identity_tables import IdentityBatch
from streams.wire.codecs import IDENTITY_ASSIGNMENT_CODEC, IDENTITY_CHANGE_CODEC, RESOLVED_CODEC
from streams.wire.row_decoder import ResolvedDecoder
from tests.integration.stages.identity import identity_scenario as scenario

AT = datetime(2026, 1, 6, 10, tzinfo=UTC)


def _column(batch_table: object, name: str) -> list[object]:
    names = batch_table.names  # type: ignore[attr-defined]
    return batch_table.columns[names.index(name)]  # type: ignore[attr-defined,no-any-return]


def test_merge_maps_every_merged_id_to_the_survivor() -> None:
    batch = IdentityBatch()
    record = scenario.changes()[1]  # B -> C, mergedPersonIds [B, A]
    batch.add_change(IDENTITY_CHANGE_CODEC.decode(IDENTITY_CHANGE_CODEC.encode(record)), 2, 7)
    assert len(batch.merges) == 1 and len(batch.rejections) == 0
    assert list(
        zip(_column(batch.aliases, "person_id"), _column(batch.aliases, "canonical_person_id"), strict=True)
    ) == [
        (scenario.B, scenario.C),
        (scenario.A, scenario.C),
    ]
    assert _column(batch.merges, "kafka_partition") == [2] and _column(batch.merges, "kafka_offset") == [7]


def test_merge_without_merged_person_ids_falls_back_to_the_merged_person() -> None:
    batch = IdentityBatch()
    record = {
        "changeId": "x",
        "kind": "merged",
        "personId": "C",
        "mergedPersonId": "B",
        "messageId": "m",
        "at": AT,
    }
    batch.add_change(IDENTITY_CHANGE_CODEC.decode(IDENTITY_CHANGE_CODEC.encode(record)), 0, 0)
    assert _column(batch.aliases, "person_id") == ["B"]
    assert _column(batch.merges, "merged_person_ids") == [["B"]]


def test_rejection_keeps_the_refused_identifier_and_the_conflicting_person() -> None:
    batch = IdentityBatch()
    record = scenario.changes()[2]
    batch.add_change(IDENTITY_CHANGE_CODEC.decode(IDENTITY_CHANGE_CODEC.encode(record)), 0, 3)
    assert len(batch.aliases) == 0 and len(batch.merges) == 0
    assert _column(batch.rejections, "identifier") == ["device_id:dev-b"]
    assert _column(batch.rejections, "conflicting_person_id") == [scenario.C]
    assert _column(batch.rejections, "reason") == ["merge_limit"]


def test_assignment_splits_the_key_and_keeps_the_version() -> None:
    batch = IdentityBatch()
    record = {
        "identifier": "email:a:b@x.com",
        "kind": "email",
        "personId": "P",
        "version": 4,
        "firstSeen": AT,
        "at": AT,
    }
    batch.add_assignment(IDENTITY_ASSIGNMENT_CODEC.decode(IDENTITY_ASSIGNMENT_CODEC.encode(record)), 1, 9)
    assert _column(batch.identities, "value") == ["a:b@x.com"]
    assert _column(batch.identities, "version") == [4]
    assert _column(batch.identities, "at") == [int(AT.timestamp())]


def test_resolved_event_copies_person_identifiers_and_revenue() -> None:
    batch = IdentityBatch()
    record = scenario.resolved_events()[3]  # the store order: 2 x 12.50 GBP
    batch.add_resolved(ResolvedDecoder().decode(RESOLVED_CODEC.encode(record)), 0, 0)
    row = dict(
        zip(batch.event_persons.names, (column[0] for column in batch.event_persons.columns), strict=True)
    )
    assert row["message_id"] == "e4" and row["channel"] == "store" and row["person_id"] == scenario.C
    assert row["identifiers"] == ["customer_id:cust-42", "loyalty_card:LC123"]
    assert row["revenue"] == 25.0 and row["currency"] == "GBP"
    assert row["timestamp_ms"] == int(scenario.at(6, 15).timestamp() * 1000)
