"""`omniseg bench pipeline`: one worker running identity, 50 segment definitions and the sinks together.

On a fresh topic prefix, database and consumer groups (the stack's own data is untouched):

1. Profiles memory: the segment engine builds ``persons`` profiles in this process from the same event
   mix with the 50 definitions; the RSS growth is reported per million profiles.
2. Throughput: ``persons`` shoppers are seeded into identity, ``events`` events are produced, and one
   ``omniseg worker`` process (resolver, link writer, history sink, identity sink, segment stage) drains
   them. Events/s is the backlog divided by the time until the segment stage and the history sink have
   committed all of it (the segment stage commits every ``OMNISEG_SEGMENTS_STATE_FLUSH_S``, and once
   its input pauses; see the report).
3. Latency: the same worker under a steady offered load (``probe_rate`` events/s); one event in ten is a
   probe that enters the person into a probe segment, and the time from producing the probe to
   reading its ``segments.changes`` record is measured (p50, p99); with ``hops``, also the time to
   the resolver.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from streams.bench.audience_probe import bench_configuration
from streams.bench.identity import seed
from streams.bench.measure import (
    CpuMeter,
    Report,
    cpu_report,
    dev_servers,
    interpolated,
    process_rss,
    wait_until,
)
from streams.bench.probe import (
    change_offsets,
    first_emitted,
    probe_producer,
    produced,
    run_probe,
)
from streams.bench.profiles import measure_profiles
from streams.bench.workers import (
    ROLE_NAMES,
    ROLES,
    close_offset_clients,
    committed_offsets,
    start_worker,
    stop_worker,
)
from streams.compiled import status as compiled_status
from streams.dev.workload import (
    bench_definitions,
    shopper_events,
)
from streams.domain.events import Event
from streams.domain.identity import IdentityRules
from streams.settings import CHANNELS, Settings
from streams.stages.identity.resolver import resolver_group
from streams.topics import RESOLVED_TOPIC, SEGMENT_CHANGES_TOPIC


def run_pipeline_bench(
    base: Settings,
    *,
    persons: int,
    events: int,
    probe_rate: int,
    probe_seconds: float,
    profile_persons: int,
    layout: str,
    report: Report,
    hops: bool = False,
    probe_log: Path | None = None,
) -> dict[str, Any]:
    from streams.dev.stack import apply_migrations, create_topics
    from streams.stages.audiences.configuration import publish_configuration
    from streams.stages.segments.definitions import apply_definitions

    memory = measure_profiles(profile_persons, 5, report)
    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "topic_prefix": f"bench-pipeline-{suffix}.",
            "clickhouse_database": f"bench_pipeline_{suffix}",
            "sink_group": f"bench-sink-{suffix}",
            "identity_group": f"bench-identity-{suffix}",
            "segments_group": f"bench-segments-{suffix}",
            "audiences_group": f"bench-audiences-{suffix}",
        }
    )
    create_topics(settings)
    apply_migrations(settings, report=lambda _msg: None)
    resolved = [settings.topic(RESOLVED_TOPIC.name)]
    channels = [settings.channel_topic(c) for c in CHANNELS]
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "segments"
        directory.mkdir()
        (directory / "bench.yaml").write_text(bench_definitions())
        apply_definitions(settings, directory)
        publish_configuration(settings, bench_configuration())
        seed(settings, persons, IdentityRules.from_yaml(settings.identity_rules_path), report)
        rng = random.Random(1)
        producer = probe_producer(settings)
        roles = ROLES[layout]
        report(
            f"starting one worker ({len(roles)} process(es)); "
            f"{settings.kafka_partitions} partition(s) per topic; modules: {compiled_status().describe()}"
        )
        workers = [
            start_worker(settings, Path(tmp) / f"worker{n}.env", overrides)
            for n, overrides in enumerate(roles)
        ]
        processes = {name: worker.pid for name, worker in zip(ROLE_NAMES[layout], workers, strict=True)}
        meter = CpuMeter({**processes, **dev_servers(settings), "bench": os.getpid()})
        try:

            def drain(total: int, started: float) -> float:
                last_report = started

                def drained() -> bool:
                    nonlocal last_report
                    for worker in workers:
                        if worker.poll() is not None:
                            raise RuntimeError(f"a worker process exited with {worker.returncode}")
                    segments = committed_offsets(settings, settings.segments_group, resolved)
                    sunk = committed_offsets(settings, settings.sink_group, channels)
                    if time.monotonic() - last_report > 5:
                        last_report = time.monotonic()
                        resolver = committed_offsets(settings, resolver_group(settings), channels)
                        report(
                            f"  {last_report - started:5.0f}s: identity resolver {resolver:,}, "
                            f"segments {segments:,}, history sink {sunk:,}"
                        )
                    return segments >= total and sunk >= total

                wait_until(drained, 1800, "the worker to drain the backlog")
                return time.monotonic() - started

            # 1. Start-up: a few events through every stage, so the worker has joined its groups and
            #    loaded the catalog and definitions before anything is timed.
            expected = _WARMUP_EVENTS
            startup = drain(
                expected, produced(producer, settings, shopper_events(expected, persons, rng, 90_000_000))
            )
            report(
                f"worker ready: {expected:,} warm-up events through every stage {startup:.1f}s after start"
            )
            # 2. Latency first, while the topics are small: Tansu's memory storage gets slower as a
            #    topic grows (BENCHMARKS.md), which would be measured instead of the pipeline.
            latency = run_probe(
                settings,
                persons,
                probe_rate,
                probe_seconds,
                rng,
                10_000_000,
                report,
                meter,
                hops=hops,
                probe_log=probe_log,
                audiences=True,
            )
            expected += latency["probe_events"]
            drain(expected, time.monotonic())
            # 3. Throughput: a backlog (many profiles still new), then a second one (known persons).
            expected += events
            first = drain(expected, produced(producer, settings, shopper_events(events, persons, rng, 0)))
            report(f"first backlog: {events:,} events in {first:.1f}s (many profiles new)")
            warm_events = shopper_events(events, persons, rng, 5_000_000)
            expected += events
            warm = drain(expected, produced(producer, settings, warm_events, meter))
            warm_cpu = cpu_report("warm", events, *meter.stop(), report)
            report(f"warm: {events:,} more events (known persons) in {warm:.1f}s")
            alone: dict[str, Any] = {}
            if layout != "single":
                expected += events
                alone = _each_alone(
                    settings,
                    layout,
                    workers,
                    lambda: start_worker(settings, Path(tmp) / "worker-segments.env", roles[-1]),
                    producer,
                    meter,
                    expected,
                    events,
                    report,
                    shopper_events(events, persons, rng, 7_000_000),
                )
            worker_rss = sum(process_rss(worker.pid) for worker in workers)
        finally:
            for worker in workers:
                stop_worker(worker)
            close_offset_clients()
            _drop(settings, report)
    return {
        "command_settings": {
            "persons": persons,
            "events": events,
            "probe_rate": probe_rate,
            "probe_seconds": probe_seconds,
            "definitions": 50,
            "layout": layout,
            "segments_state_flush_s": settings.segments_state_flush_s,
            "kafka_linger_ms": settings.kafka_linger_ms,
            "kafka_partitions": settings.kafka_partitions,
            # The workers inherit this process's environment, so they run what it runs.
            "modules": compiled_status().describe(),
        },
        "events_per_s_per_worker": round(events / warm),
        "first_backlog_events_per_s": round(events / first),
        "startup_s": round(startup, 1),
        "worker_rss_bytes_after_backlogs": worker_rss,
        **warm_cpu,
        **alone,
        **memory,
        **latency,
    }


_WARMUP_EVENTS = 2_000


def _each_alone(
    settings: Settings,
    layout: str,
    workers: list[subprocess.Popen[bytes]],
    restart_segments: Callable[[], subprocess.Popen[bytes]],
    producer: Producer,
    meter: CpuMeter,
    expected: int,
    events: int,
    report: Report,
    backlog: list[Event],
) -> dict[str, Any]:
    """Events/s of the segment process, and of the others together, while the other side is stopped.

    The concurrent drain shares two cores between both processes, the broker, ClickHouse and the bench,
    so no process gets a core to itself. Here the segment process is stopped (cleanly) while identity +
    sinks drain a backlog, timed until the resolver, the history sink and the identity sink have
    committed it. Then a new segment process starts on the waiting backlog; its rate is the backlog over
    the time from the first change its events caused (by the changes' emittedAt) to its final commit,
    so start-up and state restore are not counted. Its CPU is interpolated between samples taken every
    poll. The rate between its first and final commit (earlier sessions' figure) is reported too.
    ``workers`` is updated in place, so the caller stops the new process.
    """
    from streams.sinks.identity import identity_sink_group

    channels = [settings.channel_topic(c) for c in CHANNELS]
    resolved = [settings.topic(RESOLVED_TOPIC.name)]
    upstream = workers[:-1]
    stop_worker(workers[-1])
    segments_start = committed_offsets(settings, settings.segments_group, resolved)

    def upstream_done() -> bool:
        for process in upstream:
            if process.poll() is not None:
                raise RuntimeError(f"an identity or sinks process exited with {process.returncode}")
        return (
            committed_offsets(settings, resolver_group(settings), channels) >= expected
            and committed_offsets(settings, settings.sink_group, channels) >= expected
            and committed_offsets(settings, identity_sink_group(settings), resolved) >= expected
        )

    segments_name = ROLE_NAMES[layout][-1]
    del meter.processes[segments_name]
    started = produced(producer, settings, backlog, meter)
    wait_until(upstream_done, 600, "identity + sinks to drain the backlog alone")
    identity_s = time.monotonic() - started
    identity_cpu = cpu_report("alone_identity_sinks", events, *meter.stop(), report)

    changes_topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
    changes_from = change_offsets(settings, changes_topic)
    segments = workers[-1] = restart_segments()
    meter.processes[segments_name] = segments.pid
    meter.start()
    # (wall-clock time, CPU seconds per process since the restart), every poll
    samples: list[tuple[float, dict[str, float]]] = [(time.time(), meter.stop()[1])]
    first: tuple[float, int] | None = None
    deadline = time.monotonic() + 600
    while True:
        if segments.poll() is not None:
            raise RuntimeError(f"the segment process exited with {segments.returncode}")
        count = committed_offsets(settings, settings.segments_group, resolved)
        now = time.monotonic()
        samples.append((time.time(), meter.stop()[1]))
        if first is None and count > segments_start:
            first = (now, count)
        if count >= expected:
            break
        if now > deadline:
            raise TimeoutError("benchmark: timed out waiting for the segment process to drain alone")
        time.sleep(0.05)
    assert first is not None
    report(f"each process alone: identity + sinks {events / identity_s:,.0f} events/s")
    result: dict[str, Any] = {"alone_identity_sinks_events_per_s": round(events / identity_s), **identity_cpu}
    if count > first[1]:  # the figure earlier sessions reported: from its first to its final commit
        result["alone_segments_to_final_commit_events_per_s"] = round((count - first[1]) / (now - first[0]))
    # The rate is taken from the first change the backlog's events caused (by the change records'
    # emittedAt, the worker's clock): start-up and state restore come before it. It ends at the final
    # commit, so the last states written are counted too; that includes the stage's idle pause before
    # its last save (0.25 s), which makes the figure slightly low, never high. (Earlier sessions timed
    # from the first commit, which comes after a first epoch's states are written and acknowledged: a
    # late start that made the rate read high.)
    ids = {event.messageId for event in backlog}
    started_at = first_emitted(settings, changes_topic, changes_from, ids)
    ended_at = samples[-1][0]
    if started_at is None or ended_at - started_at < 1.0:
        report("each process alone: too few changes to time the segment process (use a larger --events)")
        return {**result, "alone_segments_events_per_s": None}
    wall = ended_at - started_at
    cpu_from = interpolated(samples, started_at)
    cpu = {name: round(seconds - cpu_from[name], 2) for name, seconds in samples[-1][1].items()}
    segments_cpu = cpu_report("alone_segments", events, wall, cpu, report)
    report(
        f"each process alone: segments {events / wall:,.0f} events/s ({events:,} events in {wall:.1f}s, "
        "from the first change they caused to the final commit; "
        f"{result.get('alone_segments_to_final_commit_events_per_s', 0):,} events/s from its first commit)"
    )
    return {**result, "alone_segments_events_per_s": round(events / wall), **segments_cpu}


def _drop(settings: Settings, report: Report) -> None:
    """Delete the run's topics and database (Tansu keeps every record in memory)."""
    from confluent_kafka.admin import AdminClient

    from streams.warehouse.writer import client_for

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    prefixes = (settings.topic_prefix, settings.sink_group, settings.identity_group, settings.segments_group)
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes)]
    try:
        if topics:
            for future in admin.delete_topics(topics, operation_timeout=30).values():
                future.result()
        # Connected to another database: ClickHouse 18.16 will not drop the one a session uses.
        other = settings.model_copy(update={"clickhouse_database": "default"})
        client_for(other).execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
    except Exception as exc:  # the figures are measured; cleanup trouble is only reported
        report(f"cleanup: could not delete every bench topic or database: {exc}")
