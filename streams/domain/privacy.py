"""Data-subject requests, the pure part (docs/privacy.md).

- A suppressed identifier is kept only as the SHA-256 of its normalised key (``kind:value``): enough to
  recognise it on a later event, not enough to read it back.
- A request names its person by :func:`subject_of`, the SHA-256 of the person id, so the request log
  recognises a second request for a person without holding the id.
- An erasure reaches every store; :class:`Receipt` says which, with how many rows or records each, and
  holds no personal data.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# Identity-change records name the request in ``messageId``; their ``changeId`` is fixed per
# (request, person) so a replay repeats it.
_ERASED_NAMESPACE = uuid.UUID("6c9b1bde-2f0a-4c53-9d1e-5d1f0b6a4e21")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# Bounded: checked for every event once anything is suppressed, and identifiers repeat (a shopper's
# cookie, email); the raw keys stay in this process's memory only.
@lru_cache(maxsize=65_536)
def suppression_key(identifier_key: str) -> str:
    """The key of a suppressed identifier on ``privacy.suppressions``."""
    return sha256_hex(identifier_key)


def subject_of(person_id: str) -> str:
    """How the request log names a person."""
    return sha256_hex(person_id)


def erased_change_id(request_id: str, person_id: str) -> str:
    return str(uuid.uuid5(_ERASED_NAMESPACE, f"{request_id}\n{person_id}"))


def new_request_id() -> str:
    return f"erasure-{uuid.uuid4()}"


def valid_request_id(request_id: str) -> bool:
    """A request id is 1-128 characters of letters, digits and ``._:-`` (it is a Kafka key)."""
    return bool(_REQUEST_ID.match(request_id))


def suppressed(identifier_keys: Iterable[str], suppressions: frozenset[str] | set[str]) -> bool:
    """Whether any of the keys is suppressed (``suppressions`` holds :func:`suppression_key` values)."""
    if not suppressions:
        return False
    return any(suppression_key(key) in suppressions for key in identifier_keys)


@dataclass
class Receipt:
    """What an erasure did, per store, without personal data: ``rows`` per ClickHouse table,
    ``records`` per Kafka topic (tombstones, exits, suppressions)."""

    rows: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    person_ids: int = 0
    identifiers: int = 0
    rounds: int = 0
    steps: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds since the start)
    skipped: set[str] = field(default_factory=set)  # stages not deployed (never committed an offset)

    def add_rows(self, counts: Mapping[str, int]) -> None:
        for table, count in counts.items():
            self.rows[table] = self.rows.get(table, 0) + count

    def add_records(self, topic: str, count: int) -> None:
        self.records[topic] = self.records.get(topic, 0) + count

    def to_dict(self) -> dict[str, Any]:
        return {
            "person_ids": self.person_ids,
            "identifiers": self.identifiers,
            "clickhouse_rows_deleted": dict(sorted(self.rows.items())),
            "kafka_records": dict(sorted(self.records.items())),
            "rounds": self.rounds,
            "stages_not_deployed": sorted(self.skipped),
            "steps": [{"step": name, "at_s": round(at, 3)} for name, at in self.steps],
        }
