"""``omniseg person erase`` and ``omniseg person requests``: erasure on request (GDPR Art. 17) and the
request log (docs/privacy.md)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from streams.settings import get_settings

PERSON_PREFIX = "person:"


def _target(identifier: str, kind: str | None) -> tuple[Any, str | None]:
    """(Identifier or None, person id or None) from the command's arguments; exits 2 when unusable."""
    from streams.domain.identity import IdentityRules, IdentityRulesError
    from streams.domain.person_view import IdentifierQueryError, parse_identifier

    text = identifier.strip()
    if kind == "person" or (kind is None and text.startswith(PERSON_PREFIX)):
        person_id = text.removeprefix(PERSON_PREFIX).strip()
        if not person_id:
            click.echo("error: empty person id", err=True)
            sys.exit(2)
        return None, person_id
    try:
        normaliser = IdentityRules.from_yaml(get_settings().identity_rules_path).normalisation.normaliser()
        return parse_identifier(identifier, kind, normaliser), None
    except (IdentifierQueryError, IdentityRulesError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


def _render(receipt: dict[str, Any]) -> str:
    lines = [
        f"  person ids: {receipt['person_ids']}, identifiers: {receipt['identifiers']}, "
        f"rounds: {receipt['rounds']}"
    ]
    for table, rows in receipt["clickhouse_rows_deleted"].items():
        lines.append(f"  ClickHouse {table}: {rows} rows deleted")
    for topic, records in receipt["kafka_records"].items():
        lines.append(f"  Kafka {topic}: {records} records")
    return "\n".join(lines)


@click.command("erase")
@click.argument("identifier")
@click.option(
    "--kind",
    default=None,
    metavar="KIND",
    help="Identifier kind (email, phone, customer_id, ...), or 'person' for a person id. "
    "Not needed for kind:value, person:ID, nor an email.",
)
@click.option("--yes", is_flag=True, help="Erase. Without it, show what would be erased and change nothing.")
@click.option(
    "--no-suppress",
    "no_suppress",
    is_flag=True,
    help="Do not suppress the identifiers: later events carrying them create a new person.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(10, 86_400),
    default=600.0,
    show_default=True,
    help="Give up (the request is logged failed) after this many seconds.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the request and its receipt as JSON.")
def erase(
    identifier: str, kind: str | None, yes: bool, no_suppress: bool, timeout_s: float, as_json: bool
) -> None:
    """Erase the person owning IDENTIFIER (or person:ID) from every store: ClickHouse, the identity
    graph and its replicas, segment state; the person exits every segment and audience; compacted
    topics get tombstones. By default the identifiers are suppressed: later events carrying them are
    dropped. Needs a running worker. Without --yes it only shows what it would erase.

    \b
      omniseg person erase ann@shop.com            # what would be erased
      omniseg person erase ann@shop.com --yes      # erase, with progress and a receipt
      omniseg person erase person:0b9f... --yes --no-suppress

    Exit codes: 0 erased (or the dry run), 1 unknown person, erasure in progress or failed, 2 unusable
    identifier.
    """
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.privacy.erasure import Erasure, ErasureFailed, ErasureRefused, find_subject
    from streams.warehouse import erasure as warehouse

    settings = get_settings()
    key, person_id = _target(identifier, kind)
    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        try:
            subject = find_subject(client, key, person_id)
        except ErasureRefused as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        if not yes:
            sql = warehouse.DriverSql(client)
            footprint = warehouse.collect(sql, subject.person_ids)
            plan = warehouse.plan(sql, settings.clickhouse_database, footprint)
            click.echo(
                f"would erase 1 person ({len(footprint.person_ids)} person ids, "
                f"{len(footprint.identifiers)} identifiers) and delete from ClickHouse:"
            )
            for table, rows in plan.items():
                click.echo(f"  {table}: {rows} rows")
            suppress = "without suppressing" if no_suppress else "suppressing its identifiers"
            click.echo(f"nothing changed; run again with --yes to erase ({suppress})")
            return
        job = Erasure(
            settings,
            client,
            subject,
            suppress=not no_suppress,
            timeout_s=timeout_s,
            progress=lambda line: click.echo(f"erasure: {line}", err=True),
        )
        try:
            job.open()
        except ErasureRefused as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        click.echo(f"erasure {job.request_id}: started", err=True)
        try:
            receipt = job.run().to_dict()
        except ErasureFailed as exc:
            click.echo(f"error: erasure {job.request_id} failed: {exc}", err=True)
            sys.exit(1)
    finally:
        client.disconnect()
    if as_json:
        click.echo(json.dumps({"request_id": job.request_id, "status": "done", "receipt": receipt}, indent=2))
    else:
        click.echo(f"erasure {job.request_id}: done")
        click.echo(_render(receipt))


@click.command("requests")
@click.option("--id", "request_id", default=None, help="One request.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def requests(request_id: str | None, limit: int, as_json: bool) -> None:
    """The data-subject request log: each request's kind, status, times and receipt (no personal data)."""
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client
    from streams.warehouse import privacy_requests

    settings = get_settings()
    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        if request_id is not None:
            found = privacy_requests.find(client.execute, request_id)
            if found is None:
                click.echo(f"error: no request {request_id}", err=True)
                sys.exit(1)
            listed = [found]
        else:
            listed = privacy_requests.recent(client.execute, limit)
    finally:
        client.disconnect()
    if as_json:
        click.echo(json.dumps([request.to_dict() for request in listed], indent=2))
        return
    if not listed:
        click.echo("no requests")
    for request in listed:
        click.echo(
            f"{request.request_id}  {request.kind}  {request.status}  "
            f"requested {request.requested_at:%Y-%m-%d %H:%M:%S}  updated {request.updated_at:%H:%M:%S}"
            + (f"  ({request.detail})" if request.detail else "")
        )
        if request.receipt and request.status == "done" and "clickhouse_rows_deleted" in request.receipt:
            click.echo(_render(request.receipt))
