"""``omniseg person show``: the single customer view of one person, found by any identifier."""

from __future__ import annotations

import json
import sys

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
