"""``omniseg api serve``: the read API (person lookup) over HTTP."""

from __future__ import annotations

import sys

import click

from streams.settings import get_settings


@click.group("api")
def api() -> None:
    """The HTTP read API (single customer view)."""


@api.command("serve")
@click.option("--host", default=None, help="Listen address (default: OMNISEG_API_HOST, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: OMNISEG_API_PORT, 8090)."
)
def serve(host: str | None, port: int | None) -> None:
    """Serve GET /v1/persons/lookup?identifier=...&kind=...&events=20 (and GET /health) until Ctrl-C.

    Clients send 'Authorization: Bearer <token>' with one of the comma-separated OMNISEG_API_TOKENS;
    the server refuses to start without any. Answers: 200 with the person's view (JSON), 400 for an
    unusable identifier, 401 without a valid token, 404 when no person has the identifier, 503 when
    ClickHouse (OMNISEG_CLICKHOUSE_*) is unreachable.
    """
    import uvicorn

    from streams.api.persons import api_tokens, create_persons_app
    from streams.domain.identity import IdentityRulesError

    settings = get_settings()
    if not api_tokens(settings):
        click.echo(
            "error: no API tokens configured; set OMNISEG_API_TOKENS to one or more comma-separated "
            "secrets (e.g. OMNISEG_API_TOKENS=$(openssl rand -hex 24))",
            err=True,
        )
        sys.exit(1)
    try:
        app = create_persons_app(settings)
    except IdentityRulesError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    host = host or settings.api_host
    port = port or settings.api_port
    click.echo(
        f"api: http://{host}:{port}/v1/persons/lookup -> ClickHouse {settings.clickhouse_host}:"
        f"{settings.clickhouse_port}/{settings.clickhouse_database}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
