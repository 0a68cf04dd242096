"""``omniseg retention``: show and apply the retention of raw events in ClickHouse (docs/retention.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from streams.settings import Settings, get_settings


@click.group("retention")
def retention() -> None:
    """Retention of raw events in ClickHouse (OMNISEG_EVENTS_RETENTION_DAYS; docs/retention.md)."""


def _connect(settings: Settings) -> tuple[Any, Callable[[str], list[tuple[Any, ...]]]]:
    from streams.cli.errors import require_clickhouse
    from streams.warehouse.retention import client as retention_client

    require_clickhouse(settings)
    client = retention_client(settings)
    return client, lambda sql: [tuple(row) for row in client.execute(sql)]


def _where(settings: Settings) -> str:
    return f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"


def _describe(current: Any) -> list[str]:
    """The plan in plain lines and a table per raw table."""
    from streams.warehouse.kpi import Table

    method = (
        "a TTL on each raw table (ClickHouse removes expired rows during merges)"
        if current.server.uses_ttl
        else "a delete (ALTER TABLE ... DELETE, run by the worker once a day)"
    )
    lines = []
    if current.enabled:
        lines.append(f"retention: {current.retention_days} days; ClickHouse {current.server.version}")
        lines.append(f"removed by: {method}")
        lines.append(f"today {current.today}: rows dated before {current.cutoff} are past the retention")
    else:
        lines.append(f"retention: off (0 days: raw events are kept); ClickHouse {current.server.version}")
    if current.boundary.year > 1970:
        lines.append(f"rollups hold every day before {current.boundary} (person_days, checkout_days)")
    else:
        lines.append("rollups: nothing folded yet; the lifetime KPIs read the raw events only")
    if current.fold_lag_days > 0:
        lines.append(f"warning: {current.fold_lag_days} days past the retention are not folded yet")
    columns = ["table", "dated by", "rows", "go before", "rows that go", "oldest day"]
    if current.server.uses_ttl:
        columns += ["TTL now", "TTL wanted"]
    table_rows = []
    for state in current.tables:
        row: list[Any] = [
            state.table.name,
            state.table.column,
            state.rows,
            str(state.remove_before) if current.enabled else "-",
            state.older if current.enabled else 0,
            state.oldest or "-",
        ]
        if current.server.uses_ttl:
            row += [state.ttl or "-", state.wanted_ttl or "-"]
        table_rows.append(tuple(row))
    lines += ["", Table(columns, table_rows).render()]
    return lines


@retention.command("show")
@click.option(
    "--days", type=click.IntRange(0, 36500), default=None, help="Show against N days instead of the setting."
)
def show(days: int | None) -> None:
    """The configured retention, and per raw table how many rows are older than it."""
    from streams.warehouse import retention as policy

    settings = get_settings()
    client, rows = _connect(settings)
    try:
        current = policy.plan(rows, settings.events_retention_days if days is None else days)
        for line in _describe(current):
            click.echo(line)
        running = policy.running_mutations(rows)
        for table, mutation, parts in running:
            click.echo(f"mutation running: {table} {mutation}, {parts} parts to do")
    except Exception as exc:  # connection or server errors: one line, where
        click.echo(f"error: retention show failed on ClickHouse {_where(settings)}: {exc}", err=True)
        sys.exit(1)
    finally:
        client.disconnect()


@retention.command("apply")
@click.option(
    "--days",
    type=click.IntRange(0, 36500),
    default=None,
    help="Apply N days instead of OMNISEG_EVENTS_RETENTION_DAYS (a worker applies the setting again).",
)
@click.option("--yes", is_flag=True, help="Do it. Without --yes, apply only says what it would do.")
@click.option(
    "--wait/--no-wait", default=True, show_default=True, help="Wait for the delete or TTL mutations."
)
@click.option("--timeout", "timeout_s", type=click.FloatRange(1), default=3600.0, show_default=True)
def apply(days: int | None, yes: bool, wait: bool, timeout_s: float) -> None:
    """Fold the days past the retention into the rollups, then delete them (ClickHouse 18.16) or set
    the TTL (current ClickHouse). A dry run unless --yes.

    \b
    Exit codes: 0 done (or dry run, or nothing to do), 1 failed or mutations still running at --timeout.
    """
    from streams.warehouse import retention as policy

    settings = get_settings()
    retention_days = settings.events_retention_days if days is None else days
    client, rows = _connect(settings)
    try:
        current = policy.plan(rows, retention_days)
        for line in _describe(current):
            click.echo(line)
        click.echo()
        if not current.changes_anything:
            click.echo("nothing to do")
            return
        if current.new_boundary > current.boundary:
            click.echo(f"would fold the days before {current.new_boundary} into the rollups")
        if current.server.uses_ttl:
            for state in current.ttl_changes:
                change = f"MODIFY TTL {state.wanted_ttl}" if state.wanted_ttl else "REMOVE TTL"
                click.echo(f"would set {state.table.name}: {change} ({state.older} rows past it now)")
        elif current.rows_to_delete:
            click.echo(f"would delete {current.rows_to_delete} rows dated before {current.cutoff}")
        if not yes:
            click.echo("dry run: nothing changed; run again with --yes to do it")
            return
        outcome = policy.apply(rows, client.execute, current, progress=click.echo)
        if outcome.mutations and wait:
            if not policy.wait(rows, progress=click.echo, timeout_s=timeout_s):
                click.echo(
                    f"error: mutations still running after {timeout_s:g} s; they go on in ClickHouse "
                    "(omniseg retention show lists them)",
                    err=True,
                )
                sys.exit(1)
            click.echo("mutations done")
        click.echo(f"done: rollups hold every day before {outcome.boundary}")
    except Exception as exc:  # connection or server errors: one line, where
        click.echo(f"error: retention apply failed on ClickHouse {_where(settings)}: {exc}", err=True)
        sys.exit(1)
    finally:
        client.disconnect()
