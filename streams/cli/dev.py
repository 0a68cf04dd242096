"""``omniseg dev up | down | status``: the local stack, no Docker."""

from __future__ import annotations

import sys

import click

from streams.dev.process import StackError
from streams.dev.stack import LocalStack
from streams.settings import get_settings
from streams.warehouse.migrations import MigrationError


@click.group("dev")
def dev() -> None:
    """Run the local stack: a Tansu broker (Kafka protocol) and a ClickHouse server, both real.

    State (pid files, logs, ClickHouse data) lives in OMNISEG_DEV_STATE_DIR (default .omniseg/).
    Ports: OMNISEG_DEV_KAFKA_PORT (19092), OMNISEG_DEV_CLICKHOUSE_PORT (19000),
    OMNISEG_DEV_CLICKHOUSE_HTTP_PORT (18123). Tansu keeps topics in memory only: a restart loses them.
    """


@dev.command("up")
@click.option("--worker", "with_worker", is_flag=True, help="Also start an `omniseg worker` on the stack.")
def up(with_worker: bool) -> None:
    """Start both servers, wait until ready, create every topic and apply every migration."""
    try:
        stack = LocalStack(get_settings())
        stack.up(report=click.echo)
        if with_worker:
            stack.start_worker(report=click.echo)
    except (StackError, MigrationError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@dev.command("down")
def down() -> None:
    """Stop the worker started by `dev up --worker` or `omniseg demo`, then both servers (by pid).
    ClickHouse data stays in the state folder."""
    LocalStack(get_settings()).down(report=click.echo)


@dev.command("status")
def status() -> None:
    """Show whether each server runs and answers. Exit code 1 if either does not."""
    healthy = True
    stack = LocalStack(get_settings())
    for item in stack.status():
        state = "ready" if item.ready else ("running, not answering" if item.pid else "stopped")
        healthy = healthy and item.ready
        pid = f"pid {item.pid}" if item.pid else "no pid"
        click.echo(f"{item.name:<11} {state:<23} {item.address:<17} {pid:<11} log: {item.log}")
    worker = stack.worker()
    worker_pid = worker.pid()
    if worker_pid is not None:
        click.echo(
            f"{'worker':<11} {'running':<23} {'':<17} {f'pid {worker_pid}':<11} log: {worker.log_file}"
        )
    else:
        click.echo(f"{'worker':<11} {'stopped':<23} start it with: omniseg dev up --worker")
    sys.exit(0 if healthy else 1)
