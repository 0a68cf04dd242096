"""Rows for the segment tables of migration 0006 (and ``products`` of 0005), from decoded records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from streams.sinks.identity_tables import Columns, datetime_seconds, epoch_millis
from streams.warehouse.products import PRODUCT_COLUMNS, product_rows

CHANGE_COLUMNS: tuple[str, ...] = (
    "change_id", "person_id", "segment_id", "subject", "change", "seq", "at", "at_ms", "trigger",
    "reason", "message_id", "definition_version", "email", "phone", "esp_subscriber_id", "user_id",
    "crm_id", "loyalty_card", "emitted_at", "kafka_partition", "kafka_offset",
)  # fmt: skip

DEFINITION_COLUMNS: tuple[str, ...] = (
    "segment_id", "version", "deleted", "kind", "personalised", "definition", "hash", "source", "applied_at",
)  # fmt: skip

EXPOSURE_COLUMNS: tuple[str, ...] = (
    "usecase_id", "version", "person_id", "arm", "at", "at_ms", "segment_id", "subject", "change_id",
)  # fmt: skip

_CONTACTS = ("email", "phone", "espSubscriberId", "userId", "crmId", "loyaltyCard")


class SegmentBatch:
    """One batch of rows for segment_changes, segment_definitions and products."""

    def __init__(self) -> None:
        self.changes = Columns(CHANGE_COLUMNS)
        self.definitions = Columns(DEFINITION_COLUMNS)
        self.products: list[dict[str, Any]] = []
        self.exposures = Columns(EXPOSURE_COLUMNS)

    def __len__(self) -> int:
        return len(self.changes) + len(self.definitions) + len(self.products) + len(self.exposures)

    def tables(self) -> Iterator[tuple[str, Columns]]:
        if len(self.definitions):
            yield "segment_definitions", self.definitions
        if self.products:
            rows = product_rows(self.products)
            columns = Columns(PRODUCT_COLUMNS)
            columns.columns = [rows[name] for name in PRODUCT_COLUMNS]
            columns.rows = len(self.products)
            yield "products", columns
        if len(self.changes):
            yield "segment_changes", self.changes
        if len(self.exposures):
            yield "usecase_exposures", self.exposures

    def add_change(self, row: tuple[Any, ...], partition: int, offset: int) -> None:
        """One ``SegmentChange`` as a tuple in the schema's field order (``RecordReader`` decodes it)."""
        (change_id, person, segment, subject, change, seq, at, trigger, reason, message_id, version) = row[
            :11
        ]
        contacts, emitted = row[11], row[12]
        if isinstance(contacts, dict):  # an older schema version, decoded by fastavro
            contacts = tuple(contacts.get(name) for name in _CONTACTS)
        elif contacts is None:
            contacts = (None,) * len(_CONTACTS)
        contacts = contacts[: len(_CONTACTS)]  # the table has no column for later contact kinds
        at_ms = max(epoch_millis(at), 0)
        self.changes.append(
            (
                change_id,
                person,
                segment,
                subject or "",
                change,
                max(int(seq), 0),
                datetime_seconds(at_ms),
                at_ms,
                trigger,
                reason,
                message_id or "",
                max(int(version), 0),
                *(value or "" for value in contacts),
                datetime_seconds(epoch_millis(emitted)),
                partition,
                offset,
            )
        )
        usecases = row[14] if len(row) > 14 else None
        if usecases and change == "entered":
            # An entry into a running use case's audience is an exposure (migration 0011).
            for entry in usecases:
                usecase_id, usecase_version, arm = (
                    (entry["usecaseId"], entry["version"], entry["arm"]) if isinstance(entry, dict) else entry
                )
                self.exposures.append(
                    (
                        usecase_id,
                        max(int(usecase_version), 0),
                        person,
                        arm,
                        datetime_seconds(at_ms),
                        at_ms,
                        segment,
                        subject or "",
                        change_id,
                    )
                )

    def add_definition(self, record: dict[str, Any]) -> None:
        """One decoded ``SegmentDefinition`` version."""
        text = record.get("definition") or ""
        body: dict[str, Any] = json.loads(text) if text else {}
        self.definitions.append(
            (
                record["segmentId"],
                max(int(record["version"]), 0),
                1 if record["deleted"] else 0,
                body.get("kind", ""),
                1 if body.get("personalised", True) else 0,
                text,
                record["hash"],
                record.get("source") or "",
                datetime_seconds(epoch_millis(record["appliedAt"])),
            )
        )

    def add_product(self, record: dict[str, Any]) -> None:
        self.products.append(record)
