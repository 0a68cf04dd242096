"""``omniseg demo``: run the main job on the local stack and print what landed."""

from __future__ import annotations

import sys

import click

from streams.dev.process import StackError
from streams.settings import get_settings
from streams.warehouse.migrations import MigrationError


@click.command("demo")
@click.option("--customers", type=click.IntRange(1, 1_000_000), default=300, show_default=True)
@click.option("--days", type=click.IntRange(1, 365), default=14, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=7,
    show_default=True,
    help="Same seed, customers and days on the same date: same stream and messageIds, so a re-run "
    "adds nothing to the history.",
)
@click.option(
    "--live-seconds",
    type=click.FloatRange(1, 3600),
    default=30,
    show_default=True,
    help="How long today's traffic takes to send, live.",
)
@click.option(
    "--usecase-shoppers",
    type=click.IntRange(100, 1_000_000),
    default=3000,
    show_default=True,
    help="New shoppers played through the use case shoes-reminder (act 9).",
)
@click.option("--down", is_flag=True, help="Stop the local stack and the worker at the end.")
def demo(
    customers: int, days: int, seed: int, live_seconds: float, usecase_shoppers: int, down: bool
) -> None:
    """Start the local stack, a worker and the collector; send a realistic four-channel stream
    (web sessions, app, email campaigns, store baskets, with bad records mixed in) through the
    collector: the days before today as history at full speed, then today's traffic live over
    --live-seconds; wait until ClickHouse holds it; print counts and KPI queries, the segments, an ad
    platform's view of its audiences, and a use case measured against its control group.

    The stack and the worker stay up afterwards for your own queries and imports; `omniseg dev down`
    stops them.
    """
    from streams.dev.demo import run_demo
    from streams.dev.stack import LocalStack

    try:
        run_demo(
            get_settings(),
            customers=customers,
            days=days,
            seed=seed,
            report=click.echo,
            live_seconds=live_seconds,
            down=down,
            usecase_shoppers=usecase_shoppers,
        )
    except (StackError, MigrationError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        if down:  # also when the demo failed before it could stop the stack itself
            LocalStack(get_settings()).down(report=lambda _line: None)
