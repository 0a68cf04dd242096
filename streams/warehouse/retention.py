"""Retention of raw events in ClickHouse (``OMNISEG_EVENTS_RETENTION_DAYS``; docs/retention.md).

One retention run (:func:`apply`):

1. **Fold.** The days about to go, up to the cutoff (today - retention days, server time zone), are
   aggregated from the raw tables, read with FINAL so each event counts once, into ``person_days``
   and ``checkout_days`` (migration 0013).
2. **Boundary.** A row in ``retention_folds`` moves the boundary to the cutoff. The views
   ``person_history`` and ``checkout_history`` read the rollups before the boundary and the raw tables
   from it on, so the lifetime KPIs give the same answers before and after the raw rows go.
3. **Remove.** On ClickHouse 18.16 (no TTL), ``ALTER TABLE ... DELETE`` of the raw rows before the
   cutoff, an asynchronous mutation. On a current ClickHouse, a TTL on the raw tables removes them
   during merges; on the folded tables the TTL allows :data:`TTL_GRACE_DAYS` more, so that a fold
   that did not run for a day or two never loses a day.

Invariant: the boundary never moves back, and nothing before the boundary is removed from the raw
tables unless it was folded first. Every step can be run again (a re-fold of a day replaces its rows).
The functions take ``rows`` and ``execute`` callables, so they run on clickhouse-driver and chDB alike.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from clickhouse_driver import Client

from streams.settings import Settings
from streams.warehouse.sql_text import Rows, integer, quote

Execute = Callable[[str], Any]
Progress = Callable[[str], None]

# On a current ClickHouse the folded tables keep this many days past the retention: the TTL runs
# on its own, the fold runs once a day, and a row must be folded before its TTL can remove it.
TTL_GRACE_DAYS = 3
# TTL first appeared in 19.6; REMOVE TTL (used when retention is turned off) in 20.x. The delete path
# works on every version, so anything older than this takes it.
_TTL_SINCE = (21, 1)
_EPOCH = date(1970, 1, 1)
# A fold reads whole days of raw events with FINAL: allow it far longer than the sinks' inserts.
_STATEMENT_TIMEOUT_S = 3600
_TTL_CLAUSE = re.compile(r"\bTTL\s+(.+?)(?:\s+SETTINGS\s|$)", re.S)


class RetentionError(RuntimeError):
    """Retention could not be shown or applied; the message says where and why, in one line."""


@dataclass(frozen=True)
class RawTable:
    """A raw table under retention: ``column`` dates its rows; ``folded`` tables feed the rollups."""

    name: str
    column: str
    folded: bool


# events and event_persons hold every event with its identifiers; invalid_events holds the original
# bytes of every refused record (emails, phones, addresses as sent), so it goes after the same time.
RAW_TABLES = (
    RawTable("events", "timestamp", folded=True),
    RawTable("event_persons", "timestamp", folded=True),
    RawTable("invalid_events", "received_at", folded=False),
)


@dataclass(frozen=True)
class Server:
    version: str

    @property
    def uses_ttl(self) -> bool:
        """Whether retention is a TTL here (current ClickHouse) rather than a scheduled delete."""
        return _version_tuple(self.version) >= _TTL_SINCE


@dataclass(frozen=True)
class TableState:
    table: RawTable
    rows: int
    remove_before: date  # rows dated before this day go (the cutoff; on a TTL, folded tables keep the grace)
    older: int  # rows dated before remove_before
    oldest: str  # the oldest day with a row ('' when empty)
    ttl: str  # the TTL expression set on the table now ('' when none, and on 18.16)
    wanted_ttl: str  # the TTL expression retention wants ('' for none)


@dataclass(frozen=True)
class Plan:
    """What a retention run would do, computed from the server's state (``omniseg retention show``)."""

    retention_days: int
    server: Server
    today: date
    boundary: date  # days before it are read from the rollups
    tables: tuple[TableState, ...]

    @property
    def enabled(self) -> bool:
        return self.retention_days > 0

    @property
    def cutoff(self) -> date:
        """Rows dated before this day are past the retention (``today`` when retention is off: none)."""
        return self.today - timedelta(days=self.retention_days) if self.enabled else _EPOCH

    @property
    def new_boundary(self) -> date:
        return max(self.boundary, self.cutoff)

    @property
    def rows_to_delete(self) -> int:
        """Rows the run deletes now (18.16) or the TTL removes (current ClickHouse)."""
        return sum(state.older for state in self.tables) if self.enabled else 0

    @property
    def ttl_changes(self) -> tuple[TableState, ...]:
        if not self.server.uses_ttl:
            return ()
        return tuple(state for state in self.tables if _same(state.ttl) != _same(state.wanted_ttl))

    @property
    def changes_anything(self) -> bool:
        return self.new_boundary > self.boundary or self.rows_to_delete > 0 or bool(self.ttl_changes)

    @property
    def fold_lag_days(self) -> int:
        """Days between the boundary and the cutoff that are not folded yet (0 when up to date)."""
        return max(0, (self.cutoff - self.boundary).days) if self.enabled and self.boundary > _EPOCH else 0


@dataclass(frozen=True)
class Outcome:
    folded_person_days: int
    folded_checkout_days: int
    boundary: date
    mutations: tuple[str, ...]  # "table: command" of each mutation started


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor, *_ = [*(int(part) for part in re.findall(r"\d+", version)[:2]), 0, 0]
    return major, minor


def _same(expression: str) -> str:
    return re.sub(r"\s+", "", expression).lower()


def _day(value: Any) -> date:
    if isinstance(value, date):
        return value
    text = str(value)
    return _EPOCH if text.startswith("0000") or not text or text == "\\N" else date.fromisoformat(text[:10])


def _day_literal(day: date) -> str:
    return f"toDate({quote(day.isoformat())})"


def server(rows: Rows) -> Server:
    """The server's version, which decides between the TTL and the scheduled delete."""
    return Server(str(rows("SELECT version()")[0][0]))


def wanted_ttl(table: RawTable, retention_days: int) -> str:
    """The TTL expression retention sets on ``table`` on a current ClickHouse ('' when off)."""
    if retention_days <= 0:
        return ""
    days = retention_days + (TTL_GRACE_DAYS if table.folded else 0)
    return f"{table.column} + toIntervalDay({days})"


def current_ttl(rows: Rows, table: str) -> str:
    """The TTL clause of ``table`` as the server shows it ('' when none)."""
    found = rows(
        f"SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {quote(table)}"
    )
    if not found:
        raise RetentionError(f"table {table} does not exist: run omniseg migrate")
    match = _TTL_CLAUSE.search(str(found[0][0]))
    return match.group(1).strip() if match else ""


def boundary(rows: Rows) -> date:
    """Days before the returned one are read from the rollups (1970-01-01: nothing folded yet)."""
    return _day(rows("SELECT max(folded_until) FROM retention_folds")[0][0])


def plan(rows: Rows, retention_days: int) -> Plan:
    """The state of every raw table against ``retention_days`` (0: retention off)."""
    found = server(rows)
    today = _day(rows("SELECT today()")[0][0])
    cutoff = today - timedelta(days=retention_days) if retention_days > 0 else _EPOCH
    states = []
    for table in RAW_TABLES:
        grace = TTL_GRACE_DAYS if found.uses_ttl and table.folded and retention_days > 0 else 0
        remove_before = cutoff - timedelta(days=grace)
        total, older, oldest = rows(
            f"SELECT count(), countIf(toDate({table.column}) < {_day_literal(remove_before)}), "
            f"toString(min(toDate({table.column}))) FROM {table.name}"
        )[0]
        states.append(
            TableState(
                table,
                int(total),
                remove_before,
                int(older),
                str(oldest) if int(total) else "",
                current_ttl(rows, table.name) if found.uses_ttl else "",
                wanted_ttl(table, retention_days),
            )
        )
    return Plan(retention_days, found, today, boundary(rows), tuple(states))


def _person_days_select(since: date, until: date) -> str:
    # The same aggregation as the raw branch of the person_history view (0013).
    return f"""
        SELECT
            person_id, event_day, channel, count(), countIf(type IN ('page', 'screen')),
            countIf(event = 'Order Completed'), countIf(event IN ('Order Refunded', 'Product Returned')),
            sumIf(amount, event = 'Order Completed'),
            -sumIf(amount, event IN ('Order Refunded', 'Product Returned')), sum(amount),
            minIf(timestamp, event = 'Order Completed'), maxIf(timestamp, event = 'Order Completed'), now()
        FROM
        (
            SELECT
                person_id, toDate(timestamp) AS event_day, channel, type, event, revenue AS amount, timestamp
            FROM event_persons
            FINAL
            WHERE toDate(timestamp) >= {_day_literal(since)} AND toDate(timestamp) < {_day_literal(until)}
        )
        GROUP BY person_id, event_day, channel"""


def _checkout_days_select(since: date, until: date) -> str:
    # The same aggregation as the raw branch of the checkout_history view (0013).
    return f"""
        SELECT event_day, channel, count(), countIf(valued), sumIf(cart_value, valued), now()
        FROM
        (
            SELECT
                toDate(timestamp) AS event_day,
                channel,
                visitParamHas(properties, 'value') OR visitParamHas(properties, 'revenue') AS valued,
                if(visitParamHas(properties, 'value'), visitParamExtractFloat(properties, 'value'),
                    visitParamExtractFloat(properties, 'revenue')) AS cart_value
            FROM events
            FINAL
            WHERE event = 'Checkout Started'
                AND toDate(timestamp) >= {_day_literal(since)} AND toDate(timestamp) < {_day_literal(until)}
        )
        GROUP BY event_day, channel"""


def fold(rows: Rows, execute: Execute, since: date, until: date, retention_days: int) -> tuple[int, int]:
    """Fold the raw days [since, until) into the rollups and move the boundary to ``until``.

    Returns the (person, day, channel) and (day, channel) rows folded."""
    execute(
        "INSERT INTO person_days (person_id, day, channel, events, visits, orders, returns, order_value, "
        "returned_value, revenue, first_order_at, last_order_at, folded_at)"
        + _person_days_select(since, until)
    )
    execute(
        "INSERT INTO checkout_days (day, channel, checkouts, valued_checkouts, checkout_value, folded_at)"
        + _checkout_days_select(since, until)
    )
    where = f"day >= {_day_literal(since)} AND day < {_day_literal(until)}"
    persons = int(rows(f"SELECT count() FROM person_days FINAL WHERE {where}")[0][0])
    checkouts = int(rows(f"SELECT count() FROM checkout_days FINAL WHERE {where}")[0][0])
    # Only now may readers switch to the rollups for these days: every one of them is in.
    execute(
        "INSERT INTO retention_folds (folded_until, retention_days, person_days, checkout_days) "
        f"SELECT {_day_literal(until)}, {integer(retention_days)}, {integer(persons)}, {integer(checkouts)}"
    )
    return persons, checkouts


def apply(rows: Rows, execute: Execute, current: Plan, progress: Progress = lambda _msg: None) -> Outcome:
    """Fold, move the boundary, then delete (18.16) or set the TTL (current ClickHouse), as ``current``
    (from :func:`plan`, just before) says. Mutations are started, not waited for: see :func:`wait`."""
    persons = checkouts = 0
    since, until = current.boundary, current.new_boundary
    if until > since:
        progress(f"folding the days before {until} into the rollups")
        persons, checkouts = fold(rows, execute, since, until, current.retention_days)
        progress(f"folded {persons} person-days and {checkouts} checkout-days; boundary now {until}")
    started: list[str] = []
    if current.server.uses_ttl:
        for state in current.ttl_changes:
            command = f"MODIFY TTL {state.wanted_ttl}" if state.wanted_ttl else "REMOVE TTL"
            execute(f"ALTER TABLE {state.table.name} {command}")
            started.append(f"{state.table.name}: {command}")
            progress(f"{state.table.name}: {command}")
    elif current.enabled:
        busy = {table for table, _, _ in running_mutations(rows)}
        for state in current.tables:
            if state.older == 0:
                continue
            if state.table.name in busy:  # an earlier delete is still at work; the next run looks again
                progress(f"{state.table.name}: a mutation is still running; not starting another delete")
                continue
            # Everything before the cutoff is folded: new_boundary >= cutoff (the invariant above).
            command = f"DELETE WHERE toDate({state.table.column}) < {_day_literal(current.cutoff)}"
            execute(f"ALTER TABLE {state.table.name} {command}")
            started.append(f"{state.table.name}: {command}")
            progress(f"{state.table.name}: deleting {state.older} rows dated before {current.cutoff}")
    return Outcome(persons, checkouts, current.new_boundary, tuple(started))


def running_mutations(rows: Rows) -> list[tuple[str, str, int]]:
    """(table, mutation id, parts to do) of the raw tables' unfinished mutations."""
    names = ", ".join(quote(table.name) for table in RAW_TABLES)
    return [
        (str(table), str(mutation_id), int(parts))
        for table, mutation_id, parts in rows(
            "SELECT table, mutation_id, parts_to_do FROM system.mutations "
            f"WHERE database = currentDatabase() AND table IN ({names}) AND is_done = 0 "
            "ORDER BY table, mutation_id"
        )
    ]


def wait(
    rows: Rows,
    progress: Progress = lambda _msg: None,
    timeout_s: float = 3600.0,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Wait until the raw tables have no unfinished mutation, reporting each change in what is left.

    Returns False when ``timeout_s`` passed first (the mutations go on in the server)."""
    deadline = clock() + timeout_s
    last = ""
    while True:
        running = running_mutations(rows)
        if not running:
            return True
        line = "; ".join(f"{table} {mutation} {parts} parts to do" for table, mutation, parts in running)
        if line != last:
            progress(f"waiting: {line}")
            last = line
        if clock() >= deadline:
            return False
        sleep(poll_s)


def run(
    rows: Rows, execute: Execute, retention_days: int, progress: Progress = lambda _msg: None
) -> Outcome | None:
    """One scheduled run: :func:`plan`, then :func:`apply` when it changes anything (None otherwise)."""
    current = plan(rows, retention_days)
    if not current.changes_anything:
        return None
    return apply(rows, execute, current, progress)


def client(settings: Settings) -> Client:
    """A connection to the omniseg database for retention runs (long statement timeout)."""
    return Client(
        host=settings.clickhouse_host,
        port=settings.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        database=settings.clickhouse_database,
        connect_timeout=5,
        send_receive_timeout=_STATEMENT_TIMEOUT_S,
        client_name="omniseg-retention",
    )


def run_scheduled(settings: Settings, progress: Progress = lambda _msg: None) -> Outcome | None:
    """The worker's daily run with the settings' retention (:func:`run`); connects and disconnects."""
    connection = client(settings)
    try:
        return run(
            lambda sql: [tuple(row) for row in connection.execute(sql)],
            connection.execute,
            settings.events_retention_days,
            progress,
        )
    finally:
        connection.disconnect()
