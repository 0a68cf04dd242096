"""Rows for the audience tables of migrations 0009 and 0015, from decoded ``audiences.deltas`` records."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime

from streams.domain.audiences.deltas import Delta
from streams.sinks.identity_tables import Columns, datetime_seconds, epoch_millis
from streams.wire.codecs import SerializationError

DELTA_COLUMNS: tuple[str, ...] = (
    "destination_id", "audience_id", "kind", "hash", "added", "kafka_offset", "at", "at_ms",
)  # fmt: skip

FRONTIER_COLUMNS: tuple[str, ...] = ("frontier",)
_OFFSET = DELTA_COLUMNS.index("kafka_offset")

# Snapshot pages split the hash space by prefix, which needs the writer's form: SHA-256 lower-case hex.
_HASH = re.compile(r"[0-9a-f]{64}")


def check_delta(delta: Delta) -> None:
    """Raise :class:`SerializationError` for a delta the readers cannot page (it gets no row)."""
    if not delta.destination_id or not delta.audience_id:
        raise SerializationError("audience delta without a destinationId or audienceId")
    if not _HASH.fullmatch(delta.hash):
        raise SerializationError("audience delta whose hash is not 64 lower-case hex characters")


class AudienceBatch:
    """One batch of delta rows, inserted into both audience tables."""

    def __init__(self) -> None:
        self.rows = Columns(DELTA_COLUMNS)

    def __len__(self) -> int:
        return len(self.rows)

    def tables(self) -> Iterator[tuple[str, Columns]]:
        # In this order: a reader that sees a frontier finds every row below it in both tables
        # (migrations 0009 and 0015).
        if len(self.rows):
            yield "audience_members", self.rows
            yield "audience_deltas", self.rows
            frontier = Columns(FRONTIER_COLUMNS)
            frontier.append((max(self.rows.columns[_OFFSET]) + 1,))
            yield "audience_frontier", frontier

    def add_delta(self, delta: Delta, at: datetime | int, offset: int) -> None:
        """One delta at ``offset`` of ``audiences.deltas``; refuses a record the readers cannot page."""
        check_delta(delta)
        at_ms = max(epoch_millis(at), 0)
        self.rows.append(
            (
                delta.destination_id,
                delta.audience_id,
                str(delta.kind),
                delta.hash,
                1 if delta.added else 0,
                offset,
                datetime_seconds(at_ms),
                at_ms,
            )
        )
