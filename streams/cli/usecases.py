"""``omniseg usecases``: define, check, start (pre-register), stop and report personalisation use cases."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from streams.domain.experiments.usecases import UseCase
    from streams.warehouse.sql_text import Rows

_DIR = click.Path(file_okay=False, path_type=Path)


@click.group("usecases")
def usecases() -> None:
    """Use cases measured like experiments: hypothesis and KPIs fixed before the start, a control group,
    lift with confidence (docs/usecases.md)."""


def _load(directory: Path | None, segments_dir: Path | None) -> list[UseCase]:
    """Every use case of the directory, checked against the segment definitions; problems exit 2."""
    from streams.domain.experiments.usecases import UseCaseError, load_usecases
    from streams.domain.segments.loader import DefinitionError, load_definitions
    from streams.domain.yaml_documents import DocumentError, read_dir

    settings = get_settings()
    directory = directory or settings.usecases_dir
    segments_dir = segments_dir or settings.segments_dir
    try:
        segments = {d.id: d.kind for d in load_definitions(read_dir(segments_dir, what="segment"))}
        return load_usecases(read_dir(directory, what="use case"), segments=segments)
    except (UseCaseError, DocumentError, DefinitionError) as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(2)


def _one(usecase_id: str, directory: Path | None, segments_dir: Path | None) -> UseCase:
    found = {usecase.id: usecase for usecase in _load(directory, segments_dir)}
    if usecase_id not in found:
        known = ", ".join(sorted(found)) or "none"
        raise click.ClickException(f"no use case {usecase_id!r} in the definitions (known: {known})")
    return found[usecase_id]


@contextmanager
def _warehouse(settings: Settings) -> Iterator[Rows]:
    """A ``rows(sql)`` function on the configured ClickHouse; one clear line when it is down."""
    from streams.cli.errors import require_clickhouse
    from streams.dev.stack import clickhouse_client

    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield lambda sql: [tuple(row) for row in client.execute(sql)]
    finally:
        client.disconnect()


_dir_option = click.option(
    "--dir", "directory", type=_DIR, help="Use case files (default OMNISEG_USECASES_DIR)."
)
_segments_option = click.option(
    "--segments", "segments_dir", type=_DIR, help="Segment definitions (default OMNISEG_SEGMENTS_DIR)."
)


@usecases.command("check")
@_dir_option
@_segments_option
def check(directory: Path | None, segments_dir: Path | None) -> None:
    """Validate every use case file; each problem is one line on stderr, exit code 2 when there is any."""
    found = _load(directory, segments_dir)
    for usecase in found:
        click.echo(
            f"ok  {usecase.id}: {usecase.audience}, primary {usecase.primary_kpi}, "
            f"control {usecase.control_share:.0%}, window {usecase.attribution_window_days} d"
        )
    click.echo(f"{len(found)} use case{'' if len(found) == 1 else 's'} valid", err=True)


@usecases.command("kpis")
def kpis() -> None:
    """The KPIs a use case can name (primary or guardrail), and what each measures."""
    from streams.domain.experiments.kpis import USECASE_KPIS

    width = max(len(name) for name in USECASE_KPIS)
    for kpi in USECASE_KPIS.values():
        click.echo(f"{kpi.name.ljust(width)}  {kpi.kind.value:<10}  {kpi.meaning}")


@usecases.command("list")
@_dir_option
@_segments_option
def list_(directory: Path | None, segments_dir: Path | None) -> None:
    """The defined use cases with their registration: version, running or stopped, since when."""
    from streams.warehouse import usecases as registry

    defined = _load(directory, segments_dir)
    settings = get_settings()
    with _warehouse(settings) as rows:
        latest = {reg.usecase_id: reg for reg in registry.registrations(rows)}
    for usecase in defined:
        reg = latest.pop(usecase.id, None)
        if reg is None:
            state = "not started"
        elif reg.running:
            edited = (
                "" if reg.checksum == usecase.checksum() else " (file edited since the start: not in force)"
            )
            state = f"v{reg.version} running since {reg.started_at:%Y-%m-%d %H:%M} UTC{edited}"
        else:
            state = f"v{reg.version} stopped {reg.stopped_at:%Y-%m-%d %H:%M} UTC"
        click.echo(f"{usecase.id}: {state}")
    for reg in latest.values():
        click.echo(f"{reg.usecase_id}: v{reg.version} {'running' if reg.running else 'stopped'} (no file)")


@usecases.command("start")
@click.argument("usecase_id")
@click.option("--new-version", is_flag=True, help="Stop the running version and start a new analysis period.")
@_dir_option
@_segments_option
def start(usecase_id: str, new_version: bool, directory: Path | None, segments_dir: Path | None) -> None:
    """Pre-register USECASE_ID and start it: its hypothesis, audience, KPIs, window, control share,
    alpha, effect and power are frozen (stored in ClickHouse with their checksum and the start time).

    Starting a running use case again with the same registered fields changes nothing; with any of them
    changed it is refused unless --new-version is given.
    """
    from streams.warehouse import usecases as registry

    usecase = _one(usecase_id, directory, segments_dir)
    settings = get_settings()
    with _warehouse(settings) as rows:
        try:
            outcome = registry.start(rows, rows, usecase, new_version=new_version)
        except registry.RegistrationError as exc:
            raise click.ClickException(str(exc)) from None
    reg = outcome.registration
    if outcome.stopped is not None:
        click.echo(f"stopped {usecase_id} v{outcome.stopped.version}")
    if not outcome.started:
        click.echo(
            f"{usecase_id} v{reg.version} is already running since {reg.started_at:%Y-%m-%d %H:%M} UTC"
        )
        return
    click.echo(
        f"started {usecase_id} v{reg.version} at {reg.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"(checksum {reg.checksum[:12]}): primary {usecase.primary_kpi}, "
        f"guardrails {', '.join(usecase.guardrail_kpis) or 'none'}, control {usecase.control_share:.0%}"
    )


@usecases.command("stop")
@click.argument("usecase_id")
def stop(usecase_id: str) -> None:
    """Stop the running version of USECASE_ID: no new exposures count; its report stays readable."""
    from streams.warehouse import usecases as registry

    settings = get_settings()
    with _warehouse(settings) as rows:
        try:
            stopped = registry.stop(rows, rows, usecase_id)
        except registry.RegistrationError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"stopped {usecase_id} v{stopped.version} at {stopped.stopped_at:%Y-%m-%d %H:%M:%S} UTC")
