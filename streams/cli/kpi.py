"""``omniseg kpi``: run the KPI queries of deploy/kpi/ against ClickHouse and print the tables."""

from __future__ import annotations

import sys

import click

from streams.settings import get_settings

# The identity KPIs in the order they are printed, with the columns to order by when --days filters.
_IDENTITY = {
    "identity_persons": None,
    "identity_identifiers_per_person": None,
    "identity_identified_share": "day, channel",
    "identity_changes_by_day": "day",
}


@click.group("kpi")
def kpi() -> None:
    """KPI queries (SQL files in deploy/kpi/, each runs on ClickHouse 18.16 and current ClickHouse)."""


def _run(queries: dict[str, str | None], days: int | None) -> None:
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.warehouse import kpi as kpi_queries

    settings = get_settings()
    where = f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        for name, order in queries.items():
            sql = kpi_queries.sql(name)
            if days is not None and order is not None:
                sql = f"SELECT * FROM (\n{sql}\n) WHERE day >= today() - {days} ORDER BY {order}"
            rows, types = client.execute(sql, with_column_types=True)
            table = kpi_queries.Table([column for column, _ in types], [tuple(row) for row in rows])
            click.echo(f"== {name}")
            click.echo(table.render())
            click.echo()
    except kpi_queries.KpiError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # connection or server errors: say where
        click.echo(f"error: KPI query failed on ClickHouse {where}: {exc}", err=True)
        sys.exit(1)
    finally:
        client.disconnect()


@kpi.command("identity")
@click.option(
    "--days",
    type=click.IntRange(0, 36500),
    default=None,
    help="Only the last N days for the per-day tables (default: all history).",
)
def identity(days: int | None) -> None:
    """Identity KPIs: persons and identifiers, identifiers per person, share of identified traffic per
    day and channel (events and sessions), merges and rejected links per day."""
    _run(dict(_IDENTITY), days)


@kpi.command("run")
@click.argument("names", nargs=-1)
def run(names: tuple[str, ...]) -> None:
    """Run the named KPI queries (all of them without NAMES). See `omniseg kpi list`."""
    from streams.warehouse import kpi as kpi_queries

    _run({name: None for name in names or kpi_queries.available()}, None)


@kpi.command("list")
def list_() -> None:
    """List the KPI queries with what each measures (docs/kpis.md explains every one)."""
    from streams.warehouse import kpi as kpi_queries

    names = kpi_queries.available()
    width = max(len(name) for name in names)
    missing = False
    for name in names:
        try:
            meaning = kpi_queries.describe(name)
        except kpi_queries.KpiError as exc:
            meaning, missing = f"(no meaning: {exc})", True
        click.echo(f"{name.ljust(width)}  {meaning}")
    if missing:
        sys.exit(1)
