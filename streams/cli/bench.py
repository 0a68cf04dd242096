"""`omniseg bench`: measure the pipeline's parts against a running stack (``omniseg dev up``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from streams.settings import get_settings


@click.group("bench")
def bench() -> None:
    """Benchmarks against the running stack; each prints its figures as JSON on stdout.

    Run `omniseg dev up` first. Figures go into BENCHMARKS.md with the exact command.
    """


@bench.command("ingest")
@click.option(
    "--events",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Events pre-produced to the channel topics, then drained by the sink.",
)
@click.option(
    "--probe-rate",
    type=click.IntRange(min=100),
    default=5_000,
    show_default=True,
    help="Steady offered load (events/s) while visibility latency is probed.",
)
@click.option(
    "--probe-seconds",
    type=click.FloatRange(min=2),
    default=10.0,
    show_default=True,
    help="How long the latency probe runs.",
)
@click.option("--keep", is_flag=True, help="Keep the benchmark's topics and ClickHouse database.")
def ingest(events: int, probe_rate: int, probe_seconds: float, keep: bool) -> None:
    """History sink: events/s from Kafka into ClickHouse, p50/p99 time until an event is visible,
    and the worker's peak RSS.

    Uses its own topic prefix, consumer group and ClickHouse database (removed afterwards unless
    --keep), so the stack's data is untouched. Starts a real `omniseg worker` subprocess and stops it.
    """
    from streams.bench.ingest import run_ingest_bench

    result = run_ingest_bench(
        get_settings(),
        events,
        probe_rate=probe_rate,
        probe_seconds=probe_seconds,
        keep=keep,
        report=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("identity")
@click.option(
    "--persons",
    type=click.IntRange(min=1000),
    default=250_000,
    show_default=True,
    help="Known shoppers seeded first, four identifiers each (250000: one million identifiers).",
)
@click.option(
    "--events",
    type=click.IntRange(min=1000),
    default=300_000,
    show_default=True,
    help="Backlog drained by a cold worker (replica load and graph rebuild included).",
)
@click.option(
    "--link-ratio",
    type=click.FloatRange(0.0, 1.0),
    default=0.03,
    show_default=True,
    help="Share of events that bring a never-seen cookie (link path); the rest are known identifiers.",
)
@click.option(
    "--probe-rate",
    type=click.IntRange(min=100),
    default=5_000,
    show_default=True,
    help="Steady offered load (events/s) while latency is probed.",
)
@click.option(
    "--probe-seconds",
    type=click.FloatRange(min=2),
    default=10.0,
    show_default=True,
    help="How long the latency probe runs.",
)
def identity(persons: int, events: int, link_ratio: float, probe_rate: int, probe_seconds: float) -> None:
    """Identity resolution: events/s per worker, p50/p99 time from an event's receivedAt until it is
    read from events.resolved (fast path and link path), and RSS per million identifiers of the
    resolver's replica and of the link writer's graph.

    Runs one worker's resolver and link writer in this process on its own topic prefix and identity
    group (the stack's data is untouched; the topics are left on the broker). Needs only Kafka.
    """
    from streams.bench.identity import run_identity_bench

    result = run_identity_bench(
        get_settings(),
        persons=persons,
        events=events,
        link_ratio=link_ratio,
        probe_rate=probe_rate,
        probe_seconds=probe_seconds,
        report=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("collector")
@click.option("--events", type=click.IntRange(min=1000), default=100_000, show_default=True)
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True, help="Client threads."
)
@click.option("--batch-size", type=click.IntRange(1, 2000), default=250, show_default=True)
def collector(events: int, concurrency: int, batch_size: int) -> None:
    """Collector: events/s through /v1/batch and request latency p50/p99, every request acked.

    Starts a real `omniseg collector serve` process on a free port (the web source of the dev stack's
    write keys), posts pre-built batches from several threads, and stops it.
    """
    import os
    import sys

    from streams.bench.collector import run_collector_bench
    from streams.dev.probes import http_healthy
    from streams.dev.process import ManagedProcess, free_port
    from streams.dev.stack import LocalStack

    settings = get_settings()
    if not any(source.channel == "web" for source in settings.sources.values()):
        raise click.ClickException("no web source configured; run `omniseg dev up` first")
    port = free_port()
    stack = LocalStack(settings)
    proc = ManagedProcess(
        name="bench-collector",
        argv=[sys.executable, "-m", "streams.cli", "collector", "serve", "--log-level", "warning"],
        state_dir=stack.state_dir,
        ports=[port],
        is_ready=lambda: http_healthy(port),
        # One write key at full speed goes beyond the default rate limit per key; measure without it.
        env={**os.environ, "OMNISEG_COLLECTOR_PORT": str(port), "OMNISEG_COLLECTOR_RATE_LIMIT_PER_S": "0"},
    )
    proc.start(60)
    try:
        run_collector_bench(
            settings, min(events, 5000), concurrency, batch_size=batch_size, port=port
        )  # warm-up
        result = run_collector_bench(settings, events, concurrency, batch_size=batch_size, port=port)
    finally:
        proc.stop()
    click.echo(json.dumps(result, indent=2))


@bench.command("pipeline")
@click.option(
    "--persons",
    type=click.IntRange(min=1000),
    default=100_000,
    show_default=True,
    help="Known shoppers seeded into identity (the backlog's events are theirs).",
)
@click.option(
    "--events",
    type=click.IntRange(min=1000),
    default=300_000,
    show_default=True,
    help="Backlog drained by one worker (identity + 50 segments + sinks).",
)
@click.option(
    "--probe-rate",
    type=click.IntRange(min=100),
    default=5_000,
    show_default=True,
    help="Steady offered load (events/s) while event-to-change latency is probed.",
)
@click.option("--probe-seconds", type=click.FloatRange(min=2), default=20.0, show_default=True)
@click.option(
    "--profile-persons",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Profiles built in this process to measure memory per million profiles.",
)
@click.option(
    "--layout",
    type=click.Choice(["single", "split", "split3"]),
    default="single",
    show_default=True,
    help="single: one process runs every stage; split: the worker's stages in two processes "
    "(identity + sinks, and segments; OMNISEG_*_ENABLED); split3: in three (identity, sinks, "
    "segments).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Partitions of every bench topic [default: OMNISEG_KAFKA_PARTITIONS]. One worker needs only "
    "one; each partition written costs a produce request per send (BENCHMARKS.md).",
)
@click.option(
    "--hops",
    is_flag=True,
    help="Also time each probe to the resolver (send_to_resolved_ms_*): a second reader tails "
    "events.resolved, which costs the bench and the broker CPU the worker then lacks.",
)
@click.option(
    "--probe-log",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write one tab-separated line per probe (scheduled and actual send time, latency to the "
    "change and to its evaluation) to this file, to see when the slow ones happened.",
)
def pipeline(
    persons: int,
    events: int,
    probe_rate: int,
    probe_seconds: float,
    profile_persons: int,
    layout: str,
    partitions: int | None,
    hops: bool,
    probe_log: Path | None,
) -> None:
    """The full pipeline in one `omniseg worker` (one process, or two or three with --layout): identity
    resolution, 50 active segment definitions and the sinks together. Prints events/s per worker,
    p50/p99 time from producing an event to reading its change on segments.changes at the offered
    load, and profile memory per million profiles.

    Uses its own topic prefix, database and groups (the stack's data is untouched). Needs the stack
    (omniseg dev up).
    """
    from streams.bench.pipeline import run_pipeline_bench

    if probe_log is not None and not probe_log.resolve().parent.is_dir():
        # Checked now, not after minutes of benchmark: the file is written when the probe ends.
        raise click.BadParameter(
            f"directory {probe_log.resolve().parent} does not exist", param_hint="--probe-log"
        )
    settings = get_settings()
    if partitions is not None:
        settings = settings.model_copy(update={"kafka_partitions": partitions})
    result = run_pipeline_bench(
        settings,
        persons=persons,
        events=events,
        probe_rate=probe_rate,
        probe_seconds=probe_seconds,
        profile_persons=profile_persons,
        layout=layout,
        report=lambda line: click.echo(line, err=True),
        hops=hops,
        probe_log=probe_log,
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("broker")
@click.option("--steps", type=click.IntRange(min=1), default=6, show_default=True)
@click.option(
    "--step",
    type=click.IntRange(min=100),
    default=2_000,
    show_default=True,
    help="Single-record batches appended to the partition before each measurement.",
)
@click.option("--rounds", type=click.IntRange(min=5), default=50, show_default=True)
def broker(steps: int, step: int, rounds: int) -> None:
    """The broker's CPU per produce + fetch round trip as a partition holds more batches.

    Explains why a long benchmark on the local Tansu broker slows down (BENCHMARKS.md). Needs the
    stack (omniseg dev up); reads the broker's CPU time from /proc.
    """
    from streams.bench.broker import run_broker_bench

    result = run_broker_bench(
        get_settings(), steps=steps, step=step, rounds=rounds, report=lambda line: click.echo(line, err=True)
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("audiences")
@click.option(
    "--members",
    type=click.IntRange(min=1000),
    default=1_000_000,
    show_default=True,
    help="Members of the big audience (the small one has a tenth).",
)
@click.option(
    "--page-size", type=click.IntRange(1, 10_000), default=10_000, show_default=True, help="Members per page."
)
@click.option("--keep", is_flag=True, help="Keep the benchmark's ClickHouse database.")
def audiences(members: int, page_size: int, keep: bool) -> None:
    """Audience snapshots over the pull API: members/s, and the API's memory for a small and a big
    audience (it must not grow with the audience).

    Uses its own ClickHouse database (dropped afterwards unless --keep) and starts a real
    `omniseg api serve` process, which it stops. Needs the stack (omniseg dev up).
    """
    from streams.bench.audiences import run_audience_bench

    result = run_audience_bench(
        get_settings(), members, page_size, keep=keep, report=lambda line: click.echo(line, err=True)
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("usecase-report")
@click.option("--exposures", type=click.IntRange(min=1000), default=1_000_000, show_default=True)
@click.option("--events", type=click.IntRange(min=1000), default=10_000_000, show_default=True)
@click.option("--rounds", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--keep", is_flag=True, help="Keep the benchmark's ClickHouse database.")
def usecase_report(exposures: int, events: int, rounds: int, keep: bool) -> None:
    """A use-case report over EXPOSURES persons and EVENTS events: seconds per report.

    Fills its own ClickHouse database inside ClickHouse (dropped afterwards unless --keep). Needs the
    stack (omniseg dev up).
    """
    from streams.bench.usecase_report import run_usecase_report_bench

    result = run_usecase_report_bench(
        get_settings(), exposures, events, rounds, keep=keep, report=lambda line: click.echo(line, err=True)
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("profile-store")
@click.option("--profiles", type=click.IntRange(min=10_000), default=10_000_000, show_default=True)
@click.option(
    "--cache",
    type=click.IntRange(min=1_000),
    default=330_000,
    show_default=True,
    help="Profiles kept decoded in memory (about 1 GB at 3 KB a profile).",
)
@click.option("--events", type=click.IntRange(min=10_000), default=1_000_000, show_default=True)
@click.option(
    "--sessions",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Concurrent shopping sessions.",
)
@click.option(
    "--session-events",
    type=click.FloatRange(min=1),
    default=10.0,
    show_default=True,
    help="Mean events per session (each session's first event of a returning person may miss the cache).",
)
@click.option(
    "--new-visitors",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of sessions by new visitors (no profile yet).",
)
@click.option(
    "--memory-profiles",
    type=click.IntRange(min=0),
    default=1_000_000,
    show_default=True,
    help="Also compare disk and memory side by side (ABBA) on this many profiles (0: skip).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/tmp/omniseg-profile-store-bench"),
    show_default=True,
)
def profile_store(
    profiles: int,
    cache: int,
    events: int,
    sessions: int,
    session_events: float,
    new_visitors: float,
    memory_profiles: int,
    directory: Path,
) -> None:
    """Segment profiles on disk (state_dir) against profiles in memory: RSS with PROFILES profiles and
    a cache of CACHE, events/s, reopening time, expiry lateness outside the cache. No stack needed."""
    from streams.bench.profile_store import Sessions, run_profile_store_bench

    result = run_profile_store_bench(
        directory,
        profiles,
        cache,
        events,
        Sessions(sessions, session_events, new_visitors),
        memory_profiles,
        report=lambda line: click.echo(line, err=True),
    )
    click.echo(json.dumps(result, indent=2))


@bench.command("import")
@click.option(
    "--lines",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="POS export lines generated (orders of one to five lines each).",
)
@click.option(
    "--own-broker", is_flag=True, help="Start a temporary Tansu broker for the run (stopped afterwards)."
)
@click.option(
    "--keep-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the generated export here and keep it (e.g. to time `omniseg import` on it).",
)
def import_(lines: int, own_broker: bool, keep_file: Path | None) -> None:
    """Bulk import: lines/s and events/s of a generated POS export, encoded alone (no broker) and
    imported into Kafka (every record acknowledged and counted on the topics).

    Uses its own topic prefix on the configured broker (the topics are left there), or with --own-broker
    a temporary broker of its own.
    """
    import tempfile

    from streams.bench.importer import run_import_bench
    from streams.dev import servers
    from streams.dev.process import free_port

    settings = get_settings()
    report = lambda line: click.echo(line, err=True)  # noqa: E731
    if not own_broker:
        result = run_import_bench(settings, lines, report, keep_file=keep_file)
    else:
        with tempfile.TemporaryDirectory(prefix="omniseg-bench-broker-") as state:
            port = free_port()
            broker = servers.tansu(Path(state), port)
            pid = broker.start(timeout_s=60)
            try:
                result = run_import_bench(
                    settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}"}),
                    lines,
                    report,
                    broker_pid=pid,
                    keep_file=keep_file,
                )
            finally:
                broker.stop()
    click.echo(json.dumps(result, indent=2))
