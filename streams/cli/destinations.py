"""``omniseg destinations``: API keys for destinations, a check of their YAML files, and apply."""

from __future__ import annotations

import hashlib
import secrets
import sys
from pathlib import Path

import click

from streams.settings import get_settings


@click.group("destinations")
def destinations() -> None:
    """Destinations: the ad platforms that pull audiences (YAML files, see deploy/destinations)."""


@destinations.command("key")
def key() -> None:
    """Print a new random API key and its SHA-256 hex.

    Give the key to the destination (it is shown once and stored nowhere) and put the hash in its YAML
    file as api_key_sha256.
    """
    new_key = secrets.token_urlsafe(32)
    click.echo(f"key:            {new_key}")
    click.echo(f"api_key_sha256: {hashlib.sha256(new_key.encode()).hexdigest()}")


@destinations.command("check")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
def check(directory: Path | None) -> None:
    """Validate every *.yaml / *.yml in DIRECTORY (default: OMNISEG_DESTINATIONS_DIR).

    Each problem is one line on stderr; exit code 2 when there is any.
    """
    from streams.domain.audiences.destinations import DestinationError, load_destination_dir

    settings = get_settings()
    directory = directory or settings.destinations_dir
    try:
        found = load_destination_dir(directory, purposes=settings.consent_purposes)
    except DestinationError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    for destination in found:
        click.echo(
            f"ok       {destination.id} ({destination.kind.value}): {len(destination.audiences)} audiences"
        )
    click.echo(f"{len(found)} destinations valid in {directory}", err=True)


@destinations.command("apply")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--dry-run", is_flag=True, help="Validate against the live segments; publish nothing.")
def apply(directory: Path | None, dry_run: bool) -> None:
    """Publish the destinations of DIRECTORY (default: OMNISEG_DESTINATIONS_DIR) to the audience writer.

    Validated first against the live segment definitions and the consent settings (every problem one
    line, exit code 2, nothing published). Running workers apply it at once: audiences a destination
    gains get their members as adds, audiences it loses get removes. The read API reads the same files
    for its keys and permissions, and notices a change by itself.
    """
    from confluent_kafka import KafkaException

    from streams.cli.errors import require_kafka
    from streams.domain.audiences.destinations import DestinationError
    from streams.stages.audiences.configuration import apply_destinations

    settings = get_settings()
    directory = directory or settings.destinations_dir
    require_kafka(settings)
    try:
        applied = apply_destinations(settings, directory, dry_run=dry_run, progress=click.echo)
    except DestinationError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    except (KafkaException, TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); is the stack up (omniseg dev up)?"
        ) from exc
    if applied.offset is None:
        click.echo(f"destinations: {applied.summary()} (dry run: nothing published)", err=True)
    else:
        click.echo(
            f"destinations: {applied.summary()} published (audiences.inputs offset {applied.offset})",
            err=True,
        )
