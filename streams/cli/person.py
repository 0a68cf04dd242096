"""``omniseg person show``: the single customer view of one person, found by any identifier."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import NoReturn, TextIO

import click

from streams.settings import get_settings


@click.group("person")
def person() -> None:
    """Look up persons (identity resolution results in ClickHouse)."""


@person.command("show")
@click.argument("identifier")
@click.option(
    "--kind",
    default=None,
    metavar="KIND",
    help="Identifier kind (customer_id, crm_id, email, loyalty_card, phone, esp_subscriber_id, device_id, "
    "advertising_id, anonymous_id). Not needed for kind:value, nor for a value with '@' (email).",
)
@click.option(
    "--events", "events", type=click.IntRange(0, 1000), default=20, show_default=True, help="Recent events."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the HTTP API's shape) instead of text.")
def show(identifier: str, kind: str | None, events: int, as_json: bool) -> None:
    """Show the person owning IDENTIFIER: canonical id, all identifiers, merges and rejected links,
    channels, first and last seen, and the most recent events (including those sent under ids merged
    into it since).

    IDENTIFIER is normalised like incoming events (emails trimmed and lower-cased, phones to E.164,
    ...), so ' Ann@Shop.com ' finds email:ann@shop.com. Examples:

    \b
      omniseg person show ann@shop.com
      omniseg person show customer_id:C-1042 --events 50
      omniseg person show '07911 123456' --kind phone --json

    Exit codes: 0 found, 1 no such person or ClickHouse unreachable, 2 unusable identifier.
    """
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.domain.identity import IdentityRules, IdentityRulesError
    from streams.domain.person_view import IdentifierQueryError, parse_identifier
    from streams.warehouse.persons import PersonNotFound, PersonStore

    settings = get_settings()
    try:
        normaliser = IdentityRules.from_yaml(settings.identity_rules_path).normalisation.normaliser()
        key = parse_identifier(identifier, kind, normaliser)
    except (IdentifierQueryError, IdentityRulesError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    where = f"{settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        view = PersonStore(client).lookup(key, events=events)
    except PersonNotFound as exc:
        click.echo(f"{exc} (in ClickHouse {where})", err=True)
        sys.exit(1)
    except Exception as exc:  # connection or server errors: say where we looked
        click.echo(f"error: cannot look up {key.key} in ClickHouse {where}: {exc}", err=True)
        sys.exit(1)
    finally:
        client.disconnect()
    click.echo(json.dumps(view.to_dict(), indent=2) if as_json else view.render())


@person.command("export")
@click.argument("identifier")
@click.option("--kind", default=None, metavar="KIND", help="Identifier kind, as for person show.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the export to FILE (progress on stderr) instead of stdout.",
)
@click.option(
    "--max-events",
    type=click.IntRange(0),
    default=None,
    help="Export at most N events, the newest (default: all; the export says when it is cut).",
)
def export(identifier: str, kind: str | None, output: str | None, max_events: int | None) -> None:
    """Export everything ClickHouse holds about the person owning IDENTIFIER (GDPR Art. 15) as JSON:
    ids, identifiers, merges, rejected links, consent, segments, audiences, use-case exposures and
    every event, newest first (docs/subject_access.md). The request is logged in privacy_requests
    without personal data.

    \b
      omniseg person export ann@shop.com > ann.json
      omniseg person export loyalty_card:LC123 --output ann.json

    Exit codes: 0 exported, 1 no such person, 2 unusable identifier or output file, 3 ClickHouse
    unreachable or failing (nothing is written to FILE then).
    """
    from streams.cli.errors import ServerDown, require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.domain.identity import IdentityRules, IdentityRulesError
    from streams.domain.person_view import IdentifierQueryError, parse_identifier
    from streams.warehouse.persons import PersonNotFound
    from streams.warehouse.subject_access import new_request_id, prepare, record_request

    settings = get_settings()
    try:
        normaliser = IdentityRules.from_yaml(settings.identity_rules_path).normalisation.normaliser()
        key = parse_identifier(identifier, kind, normaliser)
    except (IdentifierQueryError, IdentityRulesError) as exc:
        _fail(2, f"error: {exc}")
    where = f"ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port}/{settings.clickhouse_database}"
    try:
        require_clickhouse(settings)
    except ServerDown as exc:
        _fail(3, f"error: {exc.message}")
    partial = Path(f"{output}.part") if output else None
    try:
        out: TextIO = partial.open("w", encoding="utf-8") if partial else sys.stdout
    except OSError as exc:
        _fail(2, f"error: cannot write {output}: {exc.strerror or exc}")
    client = clickhouse_client(settings, settings.clickhouse_database)
    found = None
    try:
        found = prepare(client, key, request_id=new_request_id(), max_events=max_events)
        events = found.sections[-1]
        shown = 0
        for chunk in found.chunks():
            out.write(chunk)
            if partial and events.count >= shown + 10_000:
                shown = events.count
                click.echo(f"events {shown} of {found.events_total}", err=True)
        out.flush()
        record_request(client, found, "done")
    except PersonNotFound as exc:
        _discard(out, partial)
        _fail(1, f"{exc} (in {where})")
    except Exception as exc:  # server or connection errors: one line, and the request logged as failed
        _discard(out, partial)
        reason = (getattr(exc, "message", "") or str(exc) or type(exc).__name__).splitlines()[0]
        if found is not None:
            # Logged when ClickHouse still answers; the line below says what failed either way.
            with contextlib.suppress(Exception):
                record_request(client, found, "failed", f"export failed: {type(exc).__name__}")
        _fail(3, f"error: export from {where} failed: {reason}")
    finally:
        client.disconnect()
    if partial and output:
        out.close()
        partial.replace(output)
        counts = ", ".join(f"{s.name} {s.count}" for s in found.sections)
        click.echo(f"wrote {output} (request {found.request_id}): {counts}", err=True)


def _discard(out: TextIO, partial: Path | None) -> None:
    if partial is not None:
        out.close()
        partial.unlink(missing_ok=True)


def _fail(code: int, message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(code)
