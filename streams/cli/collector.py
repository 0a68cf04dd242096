"""`omniseg collector`: run the Segment-compatible HTTP collector."""

from __future__ import annotations

import click

from streams.settings import get_settings


@click.group("collector")
def collector() -> None:
    """The Segment-compatible HTTP collector (track, identify, page, screen, alias, group, batch).

    Sources are configured with OMNISEG_SOURCES, a JSON object mapping each write key to its source,
    for example: OMNISEG_SOURCES='{"wk_web_0123456789": {"name": "shop-web", "channel": "web"}}'.
    """


@collector.command("serve")
@click.option("--host", default=None, help="Interface to bind (default: OMNISEG_COLLECTOR_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: OMNISEG_COLLECTOR_PORT, 8088).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes; each has its own Kafka producer. One is best when the broker shares the machine.",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
def serve(host: str | None, port: int | None, workers: int, log_level: str) -> None:
    """Serve the collector with uvicorn until interrupted; the producer is flushed on shutdown.

    A request is answered 200 only once the broker acknowledged all its records, and 503 (which Segment
    clients retry) when it did not within OMNISEG_PRODUCE_TIMEOUT_S. OpenAPI docs are at /docs, the
    health check at /health.
    """
    import uvicorn

    settings = get_settings()
    if not settings.sources:
        click.echo(
            "warning: no sources configured, so every request will get 401. Set OMNISEG_SOURCES, e.g. "
            '\'{"wk_web_0123456789": {"name": "shop-web", "channel": "web"}}\'',
            err=True,
        )
    host = host or settings.collector_host
    port = port or settings.collector_port
    click.echo(
        f"collector on http://{host}:{port} -> Kafka {settings.kafka_bootstrap}, "
        f"{len(settings.sources)} source(s); docs at http://{host}:{port}/docs",
        err=True,
    )
    uvicorn.run(
        "streams.api.collector:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=max(5, int(settings.produce_timeout_s) + 5),
    )
