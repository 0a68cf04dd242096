"""``omniseg topics``: create and list the Kafka topics omniseg uses."""

from __future__ import annotations

import sys

import click

from streams.cli.errors import require_kafka
from streams.dev.process import StackError
from streams.dev.stack import create_topics
from streams.settings import get_settings
from streams.topics import ALL_TOPICS


@click.group("topics")
def topics() -> None:
    """The Kafka topics (names get OMNISEG_TOPIC_PREFIX in front)."""


@topics.command("list")
def list_() -> None:
    """Print every topic with its key, value schema and purpose."""
    settings = get_settings()
    for spec in ALL_TOPICS:
        click.echo(f"{settings.topic(spec.name):<22} value=schemas/{spec.value_schema}.avsc  key={spec.key}")
        click.echo(f"{'':<22} {spec.doc}")


@topics.command("create")
def create() -> None:
    """Create the missing topics (OMNISEG_KAFKA_PARTITIONS, OMNISEG_KAFKA_REPLICATION); idempotent."""
    settings = get_settings()
    require_kafka(settings)
    try:
        created = create_topics(settings)
    except StackError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{created} topics created on {settings.kafka_bootstrap}; {len(ALL_TOPICS)} in all")
