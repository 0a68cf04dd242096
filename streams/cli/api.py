"""``omniseg api serve``: the read API (person lookup, audience pulls) over HTTP."""

from __future__ import annotations

import sys

import click

from streams.settings import get_settings


@click.group("api")
def api() -> None:
    """The HTTP read API (single customer view, audiences for ad platforms)."""


@api.command("serve")
@click.option("--host", default=None, help="Listen address (default: OMNISEG_API_HOST, 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port (default: OMNISEG_API_PORT, 8090)."
)
def serve(host: str | None, port: int | None) -> None:
    """Serve the read API until Ctrl-C.

    \b
    GET /v1/persons/lookup?identifier=...&kind=...&events=20
        'Authorization: Bearer <token>' with one of the comma-separated OMNISEG_API_TOKENS. Answers:
        200 with the person's view (JSON), 400 for an unusable identifier, 401 without a valid token,
        404 when no person has the identifier.
    GET /v1/destinations/<id>/audiences[/<audience>/snapshot|deltas|export]
        'Authorization: Bearer <key>' with the destination's API key; destinations are the YAML files
        of OMNISEG_DESTINATIONS_DIR (default deploy/destinations), read again when one changes.
    GET /health, /ready, /docs (OpenAPI)
        no token.

    Both answer 503 when ClickHouse (OMNISEG_CLICKHOUSE_*) is unreachable. The server refuses to start
    without any API token and without any destination, or when the destinations do not validate.
    """
    import uvicorn

    from streams.api.persons import api_tokens, create_persons_app
    from streams.domain.audiences.destinations import Destination, DestinationError, load_destination_dir
    from streams.domain.identity import IdentityRulesError

    settings = get_settings()
    directory = settings.destinations_dir
    destinations: list[Destination] = []
    if directory.is_dir():
        try:
            destinations = load_destination_dir(directory)
        except DestinationError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(1)
    if not api_tokens(settings) and not destinations:
        click.echo(
            "error: no API tokens and no destinations configured; set OMNISEG_API_TOKENS to one or more "
            "comma-separated secrets (e.g. OMNISEG_API_TOKENS=$(openssl rand -hex 24)) or add destinations "
            f"to {directory}",
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
        f"api: http://{host}:{port}/v1/persons/lookup and /v1/destinations ({len(destinations)} from "
        f"{directory}) -> ClickHouse {settings.clickhouse_host}:{settings.clickhouse_port}/"
        f"{settings.clickhouse_database}",
        err=True,
    )
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
