"""``omniseg usecases``: define, check, start (pre-register), stop and report personalisation use cases."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streams.cli.errors import require_clickhouse, require_kafka
from streams.settings import Settings, get_settings

if TYPE_CHECKING:
    from streams.domain.experiments.assignment import RunningUseCase
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
    from streams.dev.stack import clickhouse_client

    require_clickhouse(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        yield lambda sql: [tuple(row) for row in client.execute(sql)]
    finally:
        client.disconnect()


def _publish(settings: Settings, running: tuple[RunningUseCase, ...]) -> None:
    """Tell the pipeline which use cases run (arms on segments.changes, control out of audiences).

    The registry in ClickHouse is the record; a failure here leaves it and says how to repair."""
    from confluent_kafka import KafkaException

    from streams.stages.audiences.configuration import publish_usecases

    try:
        publish_usecases(settings, running)
    except (KafkaException, RuntimeError) as exc:
        raise click.ClickException(
            f"registered in ClickHouse, but telling the pipeline failed ({exc}); run "
            "`omniseg usecases sync` once Kafka is reachable"
        ) from None


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
    require_kafka(settings)
    with _warehouse(settings) as rows:
        try:
            outcome = registry.start(rows, rows, usecase, new_version=new_version)
        except registry.RegistrationError as exc:
            raise click.ClickException(str(exc)) from None
        _publish(settings, registry.running(rows))
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
    require_kafka(settings)
    with _warehouse(settings) as rows:
        try:
            stopped = registry.stop(rows, rows, usecase_id)
        except registry.RegistrationError as exc:
            raise click.ClickException(str(exc)) from None
        _publish(settings, registry.running(rows))
    click.echo(f"stopped {usecase_id} v{stopped.version} at {stopped.stopped_at:%Y-%m-%d %H:%M:%S} UTC")


@usecases.command("plan")
@click.argument("usecase_id")
@click.option("--history-days", type=click.IntRange(1, 365), default=28, show_default=True)
@_dir_option
@_segments_option
def plan(usecase_id: str, history_days: int, directory: Path | None, segments_dir: Path | None) -> None:
    """The sample size USECASE_ID needs and when it would end at the audience's current inflow.

    The baseline (unless the definition gives one) and the inflow come from the persons who entered the
    audience in the last HISTORY_DAYS days before the last full attribution window.
    """
    from datetime import UTC, datetime, timedelta

    from streams.warehouse import usecase_outcomes

    usecase = _one(usecase_id, directory, segments_dir)
    settings = get_settings()
    now = datetime.now(UTC)
    with _warehouse(settings) as rows:
        found = usecase_outcomes.plan(rows, usecase, now, history_days)
    power = found.power
    source = "measured over the audience's history" if found.measured_baseline else "from the definition"
    click.echo(f"use case        {usecase.id}: primary {usecase.primary_kpi} on {usecase.audience}")
    if power.baseline != power.baseline:  # nan: no history and no baseline in the definition
        raise click.ClickException(
            f"no baseline for {usecase.primary_kpi}: nobody entered {usecase.audience} in the "
            f"{history_days} days looked at; give `baseline:` in the definition"
        )
    click.echo(f"baseline        {power.baseline:.4g} ({source})")
    click.echo(
        f"to detect       {power.minimum_detectable_effect:+.1%} relative at alpha {power.alpha:g}, "
        f"power {power.target_power:.0%}"
    )
    click.echo(
        f"persons needed  {power.needed_control:,} in control + {power.needed_treatment:,} in treatment "
        f"({usecase.control_share:.0%} control)"
    )
    click.echo(f"inflow          {found.entrants_per_day:,.1f} persons/day entered the audience")
    if found.days_needed == float("inf"):
        click.echo("expected end    never at the current inflow (nobody enters the audience)")
        return
    end = now + timedelta(days=found.days_needed + usecase.attribution_window_days)
    click.echo(
        f"expected end    {end:%Y-%m-%d} ({found.days_needed:,.1f} days of inflow + "
        f"{usecase.attribution_window_days} days for the last window)"
    )


@usecases.command("report")
@click.argument("usecase_id")
@click.option("--version", "version", type=click.IntRange(1), help="A version (default: the newest).")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the HTML page (default: OMNISEG_REPORTS_DIR/<id>-v<version>.html).",
)
def report(usecase_id: str, version: int | None, html_path: Path | None) -> None:
    """The report of USECASE_ID: per arm persons, conversions, revenue and AOV; each KPI's lift with
    its confidence interval and p-value (pre-registered KPIs apart from exploratory ones), the
    sample-ratio check, power against the plan; and a self-contained HTML page with the charts."""
    from datetime import UTC, datetime

    from streams.reports.usecase_html import render_html
    from streams.reports.usecase_text import render_text
    from streams.warehouse import usecase_outcomes
    from streams.warehouse import usecases as registry

    settings = get_settings()
    with _warehouse(settings) as rows:
        versions = registry.registrations(rows, usecase_id)
        if not versions:
            raise click.ClickException(
                f"use case {usecase_id!r} was never started, so it has no report "
                f"(start it with `omniseg usecases start {usecase_id}`)"
            )
        chosen = (
            versions[-1] if version is None else next((r for r in versions if r.version == version), None)
        )
        if chosen is None:
            known = ", ".join(str(r.version) for r in versions)
            raise click.ClickException(
                f"use case {usecase_id!r} has no version {version} (versions: {known})"
            )
        found = usecase_outcomes.report(rows, chosen, datetime.now(UTC))
    click.echo(render_text(found))
    path = html_path or settings.reports_dir / f"{usecase_id}-v{chosen.version}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(found), encoding="utf-8")
    click.echo(f"\nHTML report: {path.resolve()}")


@usecases.command("sync")
def sync() -> None:
    """Publish the running use cases of the registry (ClickHouse) to the pipeline again: after a start or
    stop whose publishing failed, or a broker that lost its topics."""
    from streams.warehouse import usecases as registry

    settings = get_settings()
    require_kafka(settings)
    with _warehouse(settings) as rows:
        running = registry.running(rows)
        _publish(settings, running)
    names = ", ".join(f"{u.usecase_id} v{u.version}" for u in running) or "none"
    click.echo(f"published the running use cases: {names}")
