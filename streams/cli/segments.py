"""`omniseg segments`: validate and apply segment definitions, list what is live."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli.errors import require_kafka
from streams.settings import get_settings

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("segments")
def segments() -> None:
    """Segment definitions (YAML, see docs/segments.md) and their live versions."""


@segments.command("validate")
@click.argument("directory", type=_DIR)
def validate(directory: Path) -> None:
    """Check every *.yaml in DIRECTORY without a broker (for CI and pre-commit)."""
    from streams.domain.segments.loader import DefinitionError, load_definitions
    from streams.stages.segments.definitions import read_definition_files

    try:
        definitions = load_definitions(read_definition_files(directory))
    except (DefinitionError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    for definition in definitions:
        click.echo(f"ok       {definition.id} ({definition.kind})")
    click.echo(f"{len(definitions)} definitions valid", err=True)


@segments.command("apply")
@click.argument("directory", type=_DIR)
@click.option(
    "--dry-run", is_flag=True, help="Show what would be added, changed and removed; publish nothing."
)
@click.option(
    "--prune",
    is_flag=True,
    help="Also remove live segments missing from DIRECTORY (their members exit). Without it they stay live.",
)
def apply(directory: Path, dry_run: bool, prune: bool) -> None:
    """Publish added and changed definitions; running workers pick them up without a restart.

    New and changed segments are evaluated for every profile at once (enter events, trigger
    `definition`). Live segments missing from DIRECTORY stay live and are listed, unless --prune is
    given: then they are removed and exit all their members. Versions count up per segment. Two
    applies at once cannot publish the same version: the one that started first fails and says to run
    it again.
    """
    from confluent_kafka import KafkaException

    from streams.domain.segments.loader import DefinitionError
    from streams.stages.segments.definitions import ConcurrentApplyError, apply_definitions

    settings = get_settings()
    require_kafka(settings)
    try:
        result = apply_definitions(settings, directory, dry_run=dry_run, prune=prune, progress=click.echo)
    except (DefinitionError, FileNotFoundError, ConcurrentApplyError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (KafkaException, TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); is the stack up (omniseg dev up)?"
        ) from exc
    suffix = " (dry run: nothing published)" if dry_run else ""
    click.echo(f"segments: {result.summary()}{suffix}", err=True)


@segments.command("list")
def list_() -> None:
    """The live definitions (newest version of each) on the definitions topic."""
    from confluent_kafka import KafkaException

    from streams.stages.segments.definitions import DefinitionsFollower

    settings = get_settings()
    require_kafka(settings)
    try:
        follower = DefinitionsFollower(settings, client_id="omniseg-segments-list")
        try:
            follower.load()
        finally:
            follower.close()
    except (KafkaException, TimeoutError) as exc:
        raise click.ClickException(f"cannot read definitions from {settings.kafka_bootstrap}: {exc}") from exc
    for segment_id, published in sorted(follower.published.items()):
        state = "removed" if published.deleted else "live"
        definition = follower.active.get(segment_id)
        kind = definition[0].kind if definition else "-"
        click.echo(f"{segment_id:32} v{published.version:<4} {state:8} {kind}")
