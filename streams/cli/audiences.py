"""``omniseg audiences``: the audiences of a destination, read from ClickHouse directly (no API key).

What is read is recorded in ``audience_pulls`` like an API pull, with the client ``cli:<user>``.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click

from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from streams.domain.audiences.destinations import Destination

PROGRESS_EVERY_S = 2.0


@click.group("audiences")
def audiences() -> None:
    """Audiences for ad platforms as the pull API serves them (sizes, members, CSV exports)."""


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def _configured(settings: Settings, destination_id: str) -> Destination | None:
    """The destination as configured, or None (with one line on stderr) when it is not."""
    from streams.domain.audiences.destinations import DestinationError, load_destination_dir

    try:
        found = {d.id: d for d in load_destination_dir(settings.destinations_dir)}
    except DestinationError as exc:
        click.echo(f"warning: destinations not read: {exc.problems[0]}", err=True)
        return None
    if destination_id not in found:
        click.echo(f"note: {destination_id!r} is not configured in {settings.destinations_dir}", err=True)
    return found.get(destination_id)


def _audience(text: str) -> str:
    from streams.domain.audiences.destinations import parse_audience_id

    try:
        parse_audience_id(text)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return text


@contextmanager
def _clickhouse(settings: Settings) -> Iterator[Any]:
    """A ClickHouse client; any failure ends the command with one line and exit code 1."""
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.warehouse.audience_cursors import CursorError, CursorExpired

    where = f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield client
    except click.ClickException:  # said already: a file that cannot be written
        raise
    except (CursorError, CursorExpired) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        reason = (str(exc) or type(exc).__name__).strip().splitlines()[0]
        click.echo(f"error: reading audiences from ClickHouse {where} failed: {reason}", err=True)
        sys.exit(1)
    finally:
        client.disconnect()


@audiences.command("list")
@click.argument("destination")
def list_(destination: str) -> None:
    """Every audience of DESTINATION and its members at the newest cursor."""
    from streams.warehouse import audiences as queries

    settings = get_settings()
    configured = _configured(settings, destination)
    with _clickhouse(settings) as client:
        cursor = queries.frontier(client)
        if configured is not None:
            found = queries.listing(client, configured, cursor)
        else:
            found = [
                queries.AudienceSize(a, n) for a, n in queries.sizes(client, destination, cursor).items()
            ]
        queries.record_pull(client, destination, "", "list", len(found), cursor, cursor, _who())
    for size in found:
        click.echo(f"{size.audience_id:48} {size.members:>12,}")
    click.echo(f"{len(found)} audiences of {destination} at cursor {cursor}", err=True)


@audiences.command("show")
@click.argument("destination")
@click.argument("audience")
@click.option(
    "--limit", type=click.IntRange(1, 1_000_000), default=20, show_default=True, help="Members shown."
)
def show(destination: str, audience: str, limit: int) -> None:
    """The first members (kind and hash) of AUDIENCE of DESTINATION at the newest cursor."""
    from streams.warehouse import audiences as queries

    audience = _audience(audience)
    settings = get_settings()
    shown = 0
    with _clickhouse(settings) as client:
        cursor = queries.frontier(client)
        size = queries.audience_size(client, destination, audience, cursor)
        page_size = min(limit, queries.MAX_PAGE_SIZE)
        for page in queries.snapshot(client, destination, audience, page_size=page_size, cursor=cursor):
            for member in page.members[: limit - shown]:
                click.echo(f"{member.kind:22} {member.hash}")
            shown += min(len(page.members), limit - shown)
            if shown >= limit:
                break
        queries.record_pull(client, destination, audience, "snapshot", shown, cursor, cursor, _who())
    click.echo(f"{shown} of {size:,} members of {destination}/{audience} at cursor {cursor}", err=True)


@audiences.command("export")
@click.argument("destination")
@click.argument("audience")
@click.option(
    "--format", "fmt", type=click.Choice(["google", "meta"]), required=True, help="The platform's CSV form."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File (default: stdout).",
)
def export(destination: str, audience: str, fmt: str, output: Path | None) -> None:
    """AUDIENCE of DESTINATION at the newest cursor as the CSV file the platform uploads: Google Customer
    Match (Email,Phone) or Meta Custom Audiences (email,phone,madid,extern_id), one hashed identifier
    per row. A configured destination exports only in its own platform's format (hashes differ)."""
    from streams.domain.audiences import exports

    audience = _audience(audience)
    settings = get_settings()
    configured = _configured(settings, destination)
    chosen = exports.ExportFormat(fmt)
    if configured is not None:
        try:
            chosen = exports.export_format(configured.kind, fmt)
        except exports.ExportFormatError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
    if output is None:
        _export(settings, destination, audience, chosen, sys.stdout, "stdout")
        return
    partial = output.with_name(f".{output.name}.partial")
    try:
        with _writing(output):
            with partial.open("w", encoding="utf-8", newline="") as sink:
                _export(settings, destination, audience, chosen, sink, str(output))
            os.replace(partial, output)  # a file at OUTPUT is always a whole export
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def _writing(where: Path | str) -> Iterator[None]:
    """A failed write ends the command with one line (a closed pipe: quietly)."""
    try:
        yield
    except BrokenPipeError:
        sys.exit(1)
    except OSError as exc:
        raise click.ClickException(f"cannot write {where}: {exc.strerror or exc}") from None


def _export(settings: Settings, destination: str, audience: str, fmt: Any, sink: IO[str], where: str) -> None:
    from streams.domain.audiences import exports
    from streams.warehouse import audiences as queries

    written = 0
    progress = _progress(where)
    with _clickhouse(settings) as client:
        cursor = queries.frontier(client)
        size = queries.audience_size(client, destination, audience, cursor)
        with _writing(where):
            sink.write(exports.header(fmt))
        pages = queries.snapshot(
            client, destination, audience, page_size=queries.MAX_PAGE_SIZE, cursor=cursor
        )
        for page in pages:
            text, count = exports.rows(fmt, page.members)
            with _writing(where):
                sink.write(text)
            written += count
            progress(written, size)
        with _writing(where):
            sink.flush()
        queries.record_pull(client, destination, audience, "export", written, cursor, cursor, _who())
    click.echo(
        f"export: {written:,} rows of {destination}/{audience} at cursor {cursor} to {where}", err=True
    )


def _progress(where: str) -> Callable[[int, int], None]:
    """A line on stderr at most every PROGRESS_EVERY_S, the first that long after the start."""
    started = last = time.monotonic()

    def report(written: int, size: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            click.echo(
                f"export: {written:,} of about {size:,} rows to {where} ({now - started:.0f} s)", err=True
            )

    return report
