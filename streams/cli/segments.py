"""`omniseg segments`: validate and apply segment definitions, list what is live, backfill history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from streams.cli.errors import require_kafka
from streams.settings import Settings, get_settings

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
@click.option(
    "--backfill/--no-backfill",
    default=True,
    show_default=True,
    help="Fill behaviour features that no earlier definition kept from the events in ClickHouse.",
)
def apply(directory: Path, dry_run: bool, prune: bool, backfill: bool) -> None:
    """Publish added and changed definitions; running workers pick them up without a restart.

    New and changed segments are evaluated for every profile at once (enter events, trigger
    `definition`). A definition that needs a behaviour feature no earlier definition kept (a new event,
    filter or window) then has its history backfilled from ClickHouse (docs/backfill.md): the members
    it finds enter with trigger `backfill`, and the run's progress is shown. Live segments missing from
    DIRECTORY stay live and are listed, unless --prune is given: then they are removed and exit all
    their members. Versions count up per segment. Two applies at once cannot publish the same version:
    the one that started first fails and says to run it again.
    """
    from confluent_kafka import KafkaException

    from streams.domain.segments.loader import DefinitionError
    from streams.stages.segments.backfill import BackfillJob
    from streams.stages.segments.definitions import ConcurrentApplyError, apply_definitions

    settings = get_settings()
    require_kafka(settings)
    try:
        before = BackfillJob.active_definitions(settings) if backfill and not dry_run else None
        result = apply_definitions(settings, directory, dry_run=dry_run, prune=prune, progress=click.echo)
    except (DefinitionError, FileNotFoundError, ConcurrentApplyError) as exc:
        raise click.ClickException(str(exc)) from exc
    except (KafkaException, TimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc}); is the stack up (omniseg dev up)?"
        ) from exc
    suffix = " (dry run: nothing published)" if dry_run else ""
    click.echo(f"segments: {result.summary()}{suffix}", err=True)
    if before is not None and result.writes:
        _run_backfill(settings, deferred_ok=True, before=before)


def _run_backfill(settings: Settings, deferred_ok: bool = False, **what: Any) -> None:
    """Run (or resume) a backfill with progress lines; one clear line when it cannot. With
    ``deferred_ok`` (after an apply), workers that are not running defer it with a warning instead of
    failing the apply (the definitions are published; a start script may apply before the workers)."""
    from clickhouse_driver.errors import Error as ClickHouseError
    from confluent_kafka import KafkaException

    from streams.stages.segments.backfill import BackfillError, BackfillJob, WorkersBehind

    try:
        run = BackfillJob(settings, progress=lambda line: click.echo(line, err=True)).run(**what)
    except WorkersBehind as exc:
        if not deferred_ok:
            raise click.ClickException(str(exc)) from exc
        click.echo(f"warning: backfill not run: {exc}", err=True)
        return
    except BackfillError as exc:
        raise click.ClickException(str(exc)) from exc
    except (KafkaException, ClickHouseError, TimeoutError, OSError) as exc:
        raise click.ClickException(
            f"backfill stopped: {exc}. `omniseg segments backfill run --segment ID` resumes it "
            "(`omniseg segments backfill status` shows it)"
        ) from exc
    if run is None:
        click.echo("segments: no new behaviour features: nothing to backfill", err=True)


@segments.group("backfill")
def backfill_group() -> None:
    """Fill new segments' behaviour features from the history in ClickHouse (docs/backfill.md)."""


@backfill_group.command("run")
@click.option(
    "--segment", "segment_ids", multiple=True, required=True, help="A live segment id (repeatable)."
)
def backfill_run(segment_ids: tuple[str, ...]) -> None:
    """Backfill the behaviour features of SEGMENT from history, or resume the unfinished run of them.

    Features already backfilled for a person are not filled again: a repeated run publishes nothing new.
    """
    settings = get_settings()
    require_kafka(settings)
    _run_backfill(settings, segment_ids=segment_ids)


@backfill_group.command("status")
@click.option("--limit", default=10, show_default=True, help="How many runs, newest first.")
def backfill_status(limit: int) -> None:
    """The newest backfill runs with their progress and speed."""
    from streams.cli.errors import require_clickhouse
    from streams.stages.segments.backfill import clickhouse_client, load_runs

    settings = get_settings()
    require_clickhouse(settings)
    runs = load_runs(clickhouse_client(settings), limit)
    if not runs:
        click.echo("no backfill runs yet", err=True)
    for run in runs:
        click.echo(
            f"{run.run_id}  {run.status:8} {run.started_at:%Y-%m-%d %H:%M}  {', '.join(run.segments)}: "
            f"page {run.pages_done}/{run.pages}, {run.persons:,} persons, {run.events_read:,} events, "
            f"{run.rate():,.0f} events/s{'  ' + run.message if run.message else ''}"
        )


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
