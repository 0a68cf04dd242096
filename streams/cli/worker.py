"""`omniseg worker`: run the Faust worker (history sink: channel topics -> ClickHouse)."""

from __future__ import annotations

import logging

import click

from streams.compiled import status as compiled_status
from streams.settings import get_settings

_QUIET = ("faust", "mode", "aiokafka", "kafka", "streams.sinks.events.librdkafka")


@click.command("worker")
@click.option(
    "--web-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Faust's web endpoints on this port (default: off, so workers on one host never clash).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve /metrics (Prometheus text), /health and /ready of the stages on this port "
    "(default: OMNISEG_WORKER_METRICS_PORT, else off).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Level for omniseg's own messages; Faust, mode and aiokafka stay at WARNING.",
)
def worker(web_port: int | None, metrics_port: int | None, log_level: str) -> None:
    """Run a Faust worker until SIGTERM or Ctrl-C.

    It hosts the history sink, which reads events.web|app|email|store and events.invalid and writes
    ClickHouse tables events and invalid_events in batches of OMNISEG_SINK_BATCH_SIZE (20000) or every
    OMNISEG_SINK_FLUSH_INTERVAL_S (0.5 s). Offsets are committed only after the insert succeeded. When
    ClickHouse is down, it retries with backoff up to OMNISEG_SINK_RETRY_MAX_BACKOFF_S and stops reading
    meanwhile. Consumer group: OMNISEG_SINK_GROUP. On SIGTERM it writes the pending batch, commits and
    exits. Start several workers to share the partitions. With OMNISEG_EVENTS_RETENTION_DAYS above 0 it
    also runs the retention of raw events once a day (docs/retention.md).
    """
    from faust import Worker

    from streams.app import create_app

    settings = get_settings()
    if metrics_port is not None:
        settings = settings.model_copy(update={"worker_metrics_port": metrics_port})
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_app(settings, web_port=web_port)
    click.echo(
        f"worker: Kafka {settings.kafka_bootstrap} -> ClickHouse {settings.clickhouse_host}:"
        f"{settings.clickhouse_port}/{settings.clickhouse_database} (group {settings.sink_group}); "
        f"modules: {compiled_status().describe()}",
        err=True,
    )
    Worker(app, loglevel="WARNING", quiet=True, override_logging=False).execute_from_commandline()
