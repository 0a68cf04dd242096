"""Erasure in ClickHouse: find everything of a person, delete it, and prove nothing is left.

Runs unchanged on ClickHouse 18.16 (clickhouse-driver) and on a current ClickHouse (chDB): values are
written into the SQL text through :mod:`streams.warehouse.sql_text`, deletes are ``ALTER TABLE ...
DELETE`` mutations, waited for in ``system.mutations``.

- :func:`collect` finds the person's footprint: every person id (merges included), identifier key and
  value, the raw identifier values their events carried, and the audience hashes derived from them.
- :func:`delete` removes the footprint from every table, found from the columns the tables have (so a
  new table that names its person ``person_id`` is covered without a change here): person ids, identifier
  keys, the events of the person (by the message ids resolved to it, and by the raw identifier values
  of the ``events`` columns), audience rows by hash. Removal rows of ``audience_deltas`` stay: they are
  how ad platforms learn, at their next pull, that the person left (docs/privacy.md).
- :func:`verify` is the proof: no string column of any table equals any of the footprint's ids,
  keys, values or raw values, and no free-text column contains one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.domain.audiences.hashing import AudienceIdKind, NotHashable, Platform, hash_identifier
from streams.warehouse.sql_text import quote

# The raw identifier columns of ``events``, each with the identifier kinds its values become.
RAW_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_id": ("customer_id",),
    "crm_id": ("crm_id",),
    "email": ("email",),
    "loyalty_card": ("loyalty_card",),
    "phone": ("phone",),
    "esp_subscriber_id": ("esp_subscriber_id",),
    "device_id": ("device_id",),
    "advertising_id": ("advertising_id",),
    "anonymous_id": ("anonymous_id",),
    "previous_id": ("anonymous_id", "customer_id"),
}
# Columns whose text may hold an identifier inside it (JSON, raw records, URLs, reasons).
FREE_TEXT = frozenset({"traits", "properties", "original", "reason", "page_url", "page_referrer"})
# Free-text containment checks only values this long: shorter ones would match inside other text.
_MIN_CONTAINED = 6
# Tables that never hold personal data and are not touched by an erasure.
_UNTOUCHED = frozenset({"schema_migrations", "privacy_requests"})
_DATA_ENGINES = ("MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
                 "CollapsingMergeTree", "VersionedCollapsingMergeTree", "GraphiteMergeTree", "Log",
                 "TinyLog", "StripeLog", "Memory")  # fmt: skip
_MUTATION_TIMEOUT_S = 600.0
_MAX_ALIAS_ROUNDS = 50


class Sql(Protocol):
    """``rows`` runs a SELECT; ``execute`` runs a statement. clickhouse-driver (:class:`DriverSql`) and
    chDB (``streams.warehouse.migrations.ChdbBackend``) both fit."""

    def rows(self, sql: str) -> list[tuple[Any, ...]]: ...

    def execute(self, sql: str) -> Any: ...


class DriverSql:
    """:class:`Sql` over a clickhouse-driver client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self.client.execute(sql)]

    def execute(self, sql: str) -> Any:
        return self.client.execute(sql)


@dataclass
class Footprint:
    """What ClickHouse holds that names the person."""

    person_ids: set[str] = field(default_factory=set)
    identifiers: set[str] = field(default_factory=set)  # kind:value
    raw: dict[str, set[str]] = field(default_factory=dict)  # events column -> raw values seen
    hashes: set[str] = field(default_factory=set)  # audience hashes of the identifiers

    def values(self, kinds: Iterable[str] | None = None) -> set[str]:
        wanted = None if kinds is None else set(kinds)
        found = set()
        for key in self.identifiers:
            kind, _, value = key.partition(":")
            if wanted is None or kind in wanted:
                found.add(value)
        return found

    def needles(self) -> set[str]:
        """Every string that names the person: ids, keys, values and raw values."""
        found = self.person_ids | self.identifiers | self.values()
        for values in self.raw.values():
            found |= values
        return {needle for needle in found if needle}


@dataclass
class Column:
    table: str
    name: str
    type: str


def _tuple(values: Iterable[str]) -> str:
    return "(" + ", ".join(quote(value) for value in sorted(values)) + ")"


def _array(values: Iterable[str]) -> str:
    return "[" + ", ".join(quote(value) for value in sorted(values)) + "]"


def tables(sql: Sql, database: str) -> dict[str, list[Column]]:
    """The data tables of ``database`` (views hold no rows) with their columns."""
    engines = ", ".join(quote(engine) for engine in _DATA_ENGINES)
    names = [
        str(row[0])
        for row in sql.rows(
            f"SELECT name FROM system.tables WHERE database = {quote(database)} AND engine IN ({engines}) "
            "ORDER BY name"
        )
    ]
    found: dict[str, list[Column]] = {name: [] for name in names}
    for table, name, type_ in sql.rows(
        f"SELECT table, name, type FROM system.columns WHERE database = {quote(database)} "
        "ORDER BY table, name"
    ):
        if str(table) in found:
            found[str(table)].append(Column(str(table), str(name), str(type_)))
    return found


def collect(sql: Sql, person_ids: Iterable[str]) -> Footprint:
    """The footprint of the person whose ids are ``person_ids`` (merged ids are added from
    ``person_aliases``)."""
    ids = {pid for pid in person_ids if pid}
    footprint = Footprint(person_ids=ids)
    if not ids:
        return footprint
    for _ in range(_MAX_ALIAS_ROUNDS):  # the ids linked by merges, to a fixed point (chains, late rows)
        before = len(ids)
        for row in sql.rows(
            f"SELECT person_id, canonical_person_id FROM person_aliases "
            f"WHERE person_id IN {_tuple(ids)} OR canonical_person_id IN {_tuple(ids)}"
        ):
            ids.update(str(value) for value in row)
        if len(ids) == before:
            break
    in_ids = _tuple(ids)
    keys = {
        str(row[0])
        for row in sql.rows(f"SELECT DISTINCT identifier FROM identities WHERE person_id IN {in_ids}")
    }
    keys |= {
        str(row[0])
        for row in sql.rows(
            f"SELECT DISTINCT arrayJoin(identifiers) FROM event_persons WHERE person_id IN {in_ids}"
        )
    }
    footprint.identifiers = {key for key in keys if ":" in key}
    columns = ", ".join(RAW_COLUMNS)
    raw: dict[str, set[str]] = {name: set() for name in RAW_COLUMNS}
    for row in sql.rows(
        f"SELECT DISTINCT {columns} FROM events "
        f"WHERE message_id IN (SELECT message_id FROM event_persons WHERE person_id IN {in_ids})"
    ):
        for name, value in zip(RAW_COLUMNS, row, strict=True):
            if value:
                raw[name].add(str(value))
    footprint.raw = {name: values for name, values in raw.items() if values}
    footprint.hashes = audience_hashes(footprint.identifiers)
    return footprint


def audience_hashes(identifier_keys: Iterable[str]) -> set[str]:
    """Every hash any destination could hold for these identifiers (each platform, each kind it takes)."""
    found = set()
    for key in identifier_keys:
        _, _, value = key.partition(":")
        for platform in Platform:
            for kind in AudienceIdKind:
                try:
                    found.add(hash_identifier(platform, kind, value))
                except NotHashable:
                    continue
    return found


def _events_predicate(footprint: Footprint) -> str | None:
    parts = []
    if footprint.person_ids:
        parts.append(
            "message_id IN (SELECT message_id FROM event_persons "
            f"WHERE person_id IN {_tuple(footprint.person_ids)})"
        )
    for name, kinds in RAW_COLUMNS.items():
        values = footprint.raw.get(name, set()) | footprint.values(kinds)
        if values:
            parts.append(f"{name} IN {_tuple(values)}")
    emails = footprint.values(["email"])
    if emails:
        parts.append(f"lower(email) IN {_tuple(emails)}")
    return " OR ".join(parts) or None


def predicate(table: str, columns: list[Column], footprint: Footprint) -> str | None:
    """The rows of ``table`` that name the person, or None when the table cannot hold any."""
    if table in _UNTOUCHED:
        return None
    if table == "events":
        return _events_predicate(footprint)
    ids, keys = footprint.person_ids, footprint.identifiers
    parts = []
    for column in columns:
        name, type_ = column.name, column.type
        if type_ == "String" and ids and (name == "person_id" or name.endswith("_person_id")):
            parts.append(f"{name} IN {_tuple(ids)}")
        elif type_ == "Array(String)" and ids and name.endswith("person_ids"):
            parts.append(f"hasAny({name}, {_array(ids)})")
        elif type_ == "String" and keys and name == "identifier":
            parts.append(f"{name} IN {_tuple(keys)}")
        elif type_ == "Array(String)" and keys and name == "identifiers":
            parts.append(f"hasAny({name}, {_array(keys)})")
        elif type_ == "String" and footprint.hashes and name == "hash":
            added = " AND added = 1" if table == "audience_deltas" else ""  # removals stay (module doc)
            parts.append(f"({name} IN {_tuple(footprint.hashes)}{added})")
        elif type_ == "String" and name == "original":
            needles = [n for n in footprint.needles() if len(n) >= _MIN_CONTAINED]
            parts.extend(f"positionCaseInsensitive({name}, {quote(n)}) > 0" for n in sorted(needles))
    return " OR ".join(parts) or None


def count(sql: Sql, table: str, where: str) -> int:
    return int(sql.rows(f"SELECT count() FROM {table} WHERE {where}")[0][0])


def _plan(sql: Sql, database: str, footprint: Footprint) -> list[tuple[str, str]]:
    """(table, predicate) for every table that can hold the person, ``events`` first."""
    plan: list[tuple[str, str]] = []
    for table, columns in tables(sql, database).items():
        where = predicate(table, columns, footprint)
        if where:
            plan.append((table, where))
    plan.sort(key=lambda item: item[0] != "events")
    return plan


def plan(sql: Sql, database: str, footprint: Footprint) -> dict[str, int]:
    """The rows :func:`delete` would delete, per table (a dry run)."""
    counts = {table: count(sql, table, where) for table, where in _plan(sql, database, footprint)}
    return {table: rows for table, rows in counts.items() if rows}


def delete(
    sql: Sql,
    database: str,
    footprint: Footprint,
    progress: Callable[[str], None] = lambda _line: None,
) -> dict[str, int]:
    """Delete the footprint's rows from every table; returns the rows deleted per table.

    ``events`` goes first and alone: its predicate reads ``event_persons``, which is deleted after."""
    deleted: dict[str, int] = {}
    for table, where in _plan(sql, database, footprint):
        rows = count(sql, table, where)
        if not rows:
            continue
        progress(f"deleting {rows} rows from {table}")
        sql.execute(f"ALTER TABLE {table} DELETE WHERE {where}")
        if table == "events":
            wait_for_mutations(sql, database, table, progress)
        deleted[table] = rows
    for table in deleted:
        wait_for_mutations(sql, database, table, progress)
    return deleted


def wait_for_mutations(
    sql: Sql,
    database: str,
    table: str,
    progress: Callable[[str], None],
    timeout_s: float = _MUTATION_TIMEOUT_S,
) -> None:
    deadline = time.monotonic() + timeout_s
    reported = 0.0
    while True:
        left = int(
            sql.rows(
                f"SELECT count() FROM system.mutations WHERE database = {quote(database)} "
                f"AND table = {quote(table)} AND is_done = 0"
            )[0][0]
        )
        if not left:
            return
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"ClickHouse has not finished deleting from {table} after {timeout_s:.0f}s")
        if now - reported >= 5.0:
            progress(f"waiting for ClickHouse to finish deleting from {table}")
            reported = now
        time.sleep(0.1)


def verify(sql: Sql, database: str, footprint: Footprint) -> dict[str, int]:
    """Rows per table that still name the person (empty: the proof holds).

    Every string column is compared with every needle (equality; arrays: any element), and free-text
    columns are searched for the longer needles. Audience rows are checked by hash."""
    needles = footprint.needles()
    contained = sorted(n for n in needles if len(n) >= _MIN_CONTAINED)
    left: dict[str, int] = {}
    if not needles:
        return left
    for table, columns in tables(sql, database).items():
        if table == "schema_migrations":
            continue
        parts = []
        for column in columns:
            name = f"`{column.name}`"
            if column.type in ("String", "Nullable(String)", "LowCardinality(String)"):
                parts.append(f"{name} IN {_tuple(needles)}")
                if column.name in FREE_TEXT:
                    parts.extend(f"positionCaseInsensitive({name}, {quote(n)}) > 0" for n in contained)
            elif column.type == "Array(String)":
                parts.append(f"hasAny({name}, {_array(needles)})")
        if footprint.hashes and any(c.name == "hash" and c.type == "String" for c in columns):
            added = " AND added = 1" if table == "audience_deltas" else ""
            parts.append(f"(hash IN {_tuple(footprint.hashes)}{added})")
        if not parts:
            continue
        rows = count(sql, table, " OR ".join(parts))
        if rows:
            left[table] = rows
    return left
