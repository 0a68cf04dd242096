"""``omniseg dev up | down | status``: the local stack, no Docker."""

from __future__ import annotations

import sys

import click

from streams.dev.process import StackError
from streams.dev.stack import LocalStack
from streams.settings import get_settings


@click.group("dev")
def dev() -> None:
    """Run the local stack: a Tansu broker (Kafka protocol) and a ClickHouse server, both real.

    State (pid files, logs, ClickHouse data) lives in OMNISEG_DEV_STATE_DIR (default .omniseg/).
    Ports: OMNISEG_DEV_KAFKA_PORT (19092), OMNISEG_DEV_CLICKHOUSE_PORT (19000),
    OMNISEG_DEV_CLICKHOUSE_HTTP_PORT (18123). Tansu keeps topics in memory only: a restart loses them.
    """


@dev.command("up")
def up() -> None:
    """Start both servers, wait until ready, create every topic and apply every migration."""
    try:
        LocalStack(get_settings()).up(report=click.echo)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@dev.command("down")
def down() -> None:
    """Stop both servers (by pid). ClickHouse data stays in the state folder."""
    LocalStack(get_settings()).down(report=click.echo)


@dev.command("status")
def status() -> None:
    """Show whether each server runs and answers. Exit code 1 if either does not."""
    healthy = True
    for item in LocalStack(get_settings()).status():
        state = "ready" if item.ready else ("running, not answering" if item.pid else "stopped")
        healthy = healthy and item.ready
        pid = f"pid {item.pid}" if item.pid else "no pid"
        click.echo(f"{item.name:<11} {state:<23} {item.address:<17} {pid:<11} log: {item.log}")
    sys.exit(0 if healthy else 1)
