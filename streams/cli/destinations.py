"""``omniseg destinations``: API keys for destinations and a check of their YAML files."""

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

    directory = directory or get_settings().destinations_dir
    try:
        found = load_destination_dir(directory)
    except DestinationError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)
    for destination in found:
        click.echo(
            f"ok       {destination.id} ({destination.kind.value}): {len(destination.audiences)} audiences"
        )
    click.echo(f"{len(found)} destinations valid in {directory}", err=True)
