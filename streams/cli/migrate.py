"""``omniseg migrate``: apply the numbered ClickHouse migrations."""

from __future__ import annotations

import sys
import tempfile

import click

from streams.cli.errors import ServerDown, require_clickhouse
from streams.dev.stack import apply_migrations
from streams.settings import get_settings
from streams.warehouse import migrations


@click.command("migrate")
@click.option("--list", "list_only", is_flag=True, help="List the migrations and exit.")
@click.option(
    "--chdb",
    "chdb_path",
    metavar="DIR",
    default=None,
    help="Apply to a chDB (in-process, current ClickHouse) database in DIR instead of the server; "
    "use 'tmp' for a throwaway folder. Proves the migrations run on a modern ClickHouse.",
)
def migrate(list_only: bool, chdb_path: str | None) -> None:
    """Apply every migration in deploy/clickhouse/ that the database lacks (OMNISEG_CLICKHOUSE_*).

    With OMNISEG_CLICKHOUSE_CLUSTER set, every table is created on every node of that cluster as a
    replicated table with a Distributed table in front (docs/clickhouse_cluster.md)."""
    settings = get_settings()
    try:
        if list_only:
            for item in migrations.discover():
                click.echo(f"{item.version:04d}  {item.name}  {item.checksum}")
            return
        if chdb_path is not None:
            path = tempfile.mkdtemp(prefix="omniseg-chdb-") if chdb_path == "tmp" else chdb_path
            # chDB is one in-process server: the plain tables, whatever OMNISEG_CLICKHOUSE_CLUSTER says.
            backend = migrations.ChdbBackend(path, settings.clickhouse_database)
            done = migrations.apply(backend, settings.clickhouse_database, progress=click.echo)
            click.echo(f"chDB at {path}: {len(done)} migrations applied")
            return
        require_clickhouse(settings)
        done = apply_migrations(settings, report=click.echo)
        on = f" (cluster {settings.clickhouse_cluster})" if settings.clickhouse_cluster else ""
        click.echo(
            f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}{on}: "
            f"{len(done)} migrations applied"
        )
    except ServerDown:
        raise
    except migrations.MigrationError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # connection failures: say where we tried
        click.echo(
            f"error: cannot migrate {settings.clickhouse_host}:{settings.clickhouse_port}: {exc}", err=True
        )
        sys.exit(1)
