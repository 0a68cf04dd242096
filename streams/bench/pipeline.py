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

import gc
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.bench.identity import _percentile, _shopper, _wait, rss_bytes, seed
from streams.bench.tail import TailReader
from streams.compiled import status as compiled_status
from streams.domain.events import Event
from streams.domain.identity import IdentityRules
from streams.domain.segments.engine import SegmentEngine
from streams.domain.segments.events import LineItem, SegmentEvent
from streams.domain.segments.loader import load_definitions
from streams.domain.segments.profile import Profile
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.sending import PACED_LINGER_MS, Sender
from streams.settings import CHANNELS, Settings
from streams.stages.identity.resolver import resolver_group
from streams.topics import RESOLVED_TOPIC, SEGMENT_CHANGES_TOPIC
from streams.wire.codecs import EVENT_CODEC, RESOLVED_CODEC, SEGMENT_CHANGE_CODEC

Report = Callable[[str], None]
PROBE_EVENT = "Bench Probe"
_PROBE_NAME = PROBE_EVENT.encode()  # found in the raw bytes of a resolved probe event
_PROBE_SEGMENT = b"\x0aprobe"  # the Avro string "probe" (zig-zag length 5), as in a change of that segment
_CATEGORIES = ("shoes", "apparel", "beauty", "home")
_NAMES = ("Product Viewed",) * 14 + ("Product Added",) * 3 + ("Order Completed", "page", "Email Opened")


def bench_definitions() -> str:
    """50 definitions of the kinds real shops run (behaviour, product, context, derived, refs)."""
    docs: list[str] = []
    for i, category in enumerate(_CATEGORIES):
        docs += [
            f"- id: viewed-{category}-7d\n  when: {{event: Product Viewed, "
            f"product: {{category: {category}}}, window: 7d, count: {{gte: 2}}}}",
            f"- id: bought-{category}-90d\n  when: {{event: Order Completed, "
            f"product: {{category: {category}}}, window: 90d}}",
            f"- id: browsed-not-bought-{category}\n  when: {{all: [{{segment: viewed-{category}-7d}}, "
            f"{{not: {{segment: bought-{category}-90d}}}}]}}",
            f"- id: added-{category}-1d\n  when: {{event: Product Added, product: {{category: {category}}}, "
            f"window: 1d}}",
            f"- id: spend-{category}-365d\n  when: {{event: Order Completed, "
            f"product: {{category: {category}}}, window: 365d, sum: {{of: revenue, gte: {50 + 25 * i}}}}}",
        ]
    for channel in CHANNELS:
        docs += [
            f"- id: active-{channel}-1d\n  when: {{event: [Product Viewed, page], channel: {channel}, "
            "window: 1d}",
            f"- id: prefers-{channel}\n  when: {{derived: preferred_channel, eq: {channel}}}",
        ]
    docs += [
        "- id: mobile-evening\n  when: {event: [Product Viewed, page], device_type: mobile, "
        "local_hour: {between: [18, 23]}, window: 14d, count: {gte: 3}}",
        "- id: new-customer\n  when: {event: Order Completed, first: {within: 30d}}",
        "- id: returning\n  when: {event: Order Completed, count: {gte: 2}}",
        "- id: lapsed\n  when: {all: [{derived: lapse_ratio, gt: 1.5}, {derived: purchase_count, gte: 2}]}",
        "- id: high-value\n  when: {event: Order Completed, window: 365d, sum: {of: revenue, gte: 300}}",
        "- id: gold\n  when: {trait: tier, in: [gold, platinum]}",
        "- id: engaged-email\n  when: {event: Email Opened, window: 30d, count: {gte: 2}}",
        "- id: no-purchase-30d\n  when: {all: [{event: Order Completed}, "
        "{not: {event: Order Completed, window: 30d}}]}",
        "- id: cart-abandoner\n  when: {all: [{event: Product Added, window: 1d}, "
        "{not: {event: Order Completed, window: 1d}}]}",
        "- id: heavy-viewer\n  when: {event: Product Viewed, window: 1d, count: {gte: 10}}",
        "- id: big-basket\n  when: {event: Order Completed, window: 90d, max: {of: revenue, gte: 150}}",
        "- id: winter-shopper\n  when: {event: Order Completed, season: winter, window: 365d}",
        "- id: weekend-browser\n  when: {event: Product Viewed, weekday: [sat, sun], window: 14d}",
        "- id: vip\n  when: {any: [{segment: gold}, {segment: high-value}]}",
        "- id: store-and-web\n  when: {all: [{segment: active-store-1d}, {segment: active-web-1d}]}",
        "- id: probe\n  personalised: false\n  when: {event: Bench Probe, window: 10m}",
        "- id: already-purchased\n  kind: suppression\n  per: product",
        "- id: already-purchased-category\n  kind: suppression\n  per: category\n  returns_exit: false",
        "- id: likes-shoes\n  when: {derived: preferred_category, eq: shoes}",
        "- id: long-time\n  when: {derived: days_since_first_seen, gte: 365}",
        "- id: repeat-interval-short\n  when: {derived: purchase_interval_days, lt: 14}",
        "- id: recent-buyer-7d\n  when: {event: Order Completed, window: 7d}",
    ]
    assert len(docs) == 50, len(docs)
    return "\n".join(docs) + "\n"


def _event_data(k: int, i: int, rng: random.Random, name: str) -> dict[str, Any]:
    ids = _shopper(i)
    channel = CHANNELS[k % 4]
    now = datetime.now(UTC)
    category = _CATEGORIES[k % 4]
    data: dict[str, Any] = {
        "messageId": f"bench-{k}",
        "type": "track",
        "event": name,
        "context": {
            "channel": channel,
            "userAgent": "Mozilla/5.0 (Linux; Android 14) Mobile",
            "ip": "10.0.0.1",
        },
        "properties": {"sku": f"SKU-{k % 500}", "price": 12.5 + k % 90, "category": category},
        "timestamp": now,
        "receivedAt": now,
    }
    if name == "page":
        data["type"], data["event"], data["properties"] = "page", None, {"path": "/"}
    if name == "Order Completed":
        data["lines"] = [{"sku": f"SKU-{k % 500}", "quantity": 1, "unitPrice": 12.5 + k % 90}]
    if channel == "email":
        data["identifiers"] = {"email": ids[1].value}
    elif channel == "app":
        data["userId"] = ids[0].value
        data["context"]["device"] = {"id": ids[3].value, "type": "android"}
    else:
        data["userId"] = ids[0].value
        data["anonymousId"] = ids[2].value
    return data


def make_events(n: int, persons: int, rng: random.Random, start: int) -> list[Event]:
    """Known shoppers (fast path) on every channel with a realistic mix of event names."""
    return [
        Event.model_validate(_event_data(k, rng.randrange(persons), rng, rng.choice(_NAMES)))
        for k in range(start, start + n)
    ]


def measure_profiles(persons: int, events_per_person: int, report: Report) -> dict[str, Any]:
    """RSS growth of ``persons`` profiles built by the engine with the 50 definitions."""
    engine = SegmentEngine([(d, 1) for d in load_definitions([("bench", bench_definitions())])])
    rng = random.Random(7)
    now = int(time.time() * 1000)
    before = rss_bytes()
    profiles: dict[str, Profile] = {}
    started = time.monotonic()
    applied = 0
    for i in range(persons):
        profile = profiles[f"p{i}"] = Profile(f"p{i}")
        for j in range(events_per_person):
            name = rng.choice(_NAMES)
            lines = (LineItem(sku=f"SKU-{(i + j) % 500}", quantity=1, unit_price=40.0),)
            event = SegmentEvent(
                f"m{i}-{j}",
                now - rng.randrange(30 * 86_400_000),
                name,
                CHANNELS[j % 4],
                device_type="android" if j % 2 else None,
                properties={"category": _CATEGORIES[j % 4], "sku": f"SKU-{(i + j) % 500}"},
                lines=lines if name == "Order Completed" else (),
                identifiers=(f"email:user{i}@example.com", f"customer_id:C{i}"),
            )
            engine.apply(profile, event, now)
            applied += 1
    elapsed = time.monotonic() - started
    grown = rss_bytes() - before
    report(
        f"profiles: {persons:,} persons x {events_per_person} events in {elapsed:.1f}s "
        f"({applied / elapsed:,.0f} engine applies/s), RSS +{grown / 1e6:.0f} MB"
    )
    return {
        "profile_persons": persons,
        "profile_events_per_person": events_per_person,
        "engine_applies_per_s_single_thread": round(applied / elapsed),
        "profile_rss_bytes_per_million_profiles": round(grown / persons * 1e6),
    }


# One client per consumer group for reading its committed offsets, kept for the whole run: the bench
# polls them every 50 ms while it waits, and a new client per read (threads, a connection, metadata,
# the coordinator) cost the bench and the broker CPU beside the processes being measured.
_OFFSET_CLIENTS: dict[tuple[str, str], Consumer] = {}


def _committed(settings: Settings, group: str, topics: list[str]) -> int:
    client = _OFFSET_CLIENTS.get((settings.kafka_bootstrap, group))
    if client is None:
        client = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group})
        _OFFSET_CLIENTS[(settings.kafka_bootstrap, group)] = client
    wanted = [TopicPartition(t, p) for t in topics for p in range(settings.kafka_partitions)]
    return sum(max(0, tp.offset) for tp in client.committed(wanted, timeout=10))


def _close_offset_clients() -> None:
    while _OFFSET_CLIENTS:
        _OFFSET_CLIENTS.popitem()[1].close()


def _start_worker(settings: Settings, env_file: Path, overrides: dict[str, Any]) -> subprocess.Popen[bytes]:
    values = {**_worker_env(settings), **overrides}
    lines = [f"OMNISEG_{name.upper()}={value}" for name, value in values.items()]
    env_file.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "OMNISEG_ENV_FILE": str(env_file)}
    omniseg = str(Path(sys.executable).with_name("omniseg"))
    return subprocess.Popen([omniseg, "worker", "--log-level", "warning"], env=env, start_new_session=True)


def _worker_env(settings: Settings) -> dict[str, Any]:
    return {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_partitions": settings.kafka_partitions,
        "kafka_linger_ms": settings.kafka_linger_ms,
        "topic_prefix": settings.topic_prefix,
        "clickhouse_host": settings.clickhouse_host,
        "clickhouse_port": settings.clickhouse_port,
        "clickhouse_database": settings.clickhouse_database,
        "sink_group": settings.sink_group,
        "identity_group": settings.identity_group,
        "segments_group": settings.segments_group,
        "segments_state_flush_s": settings.segments_state_flush_s,
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _process_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return 0
    return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU time of named processes over a phase: where the machine's cores went."""

    def __init__(self, processes: dict[str, int]) -> None:
        self.processes = processes
        self._started: dict[str, float] = {}
        self._at = 0.0

    def start(self) -> None:
        self._at = time.monotonic()
        self._started = {name: _cpu_seconds(pid) for name, pid in self.processes.items()}

    def stop(self) -> tuple[float, dict[str, float]]:
        """(wall seconds, CPU seconds per process) since :meth:`start`."""
        wall = time.monotonic() - self._at
        return wall, {
            name: round(_cpu_seconds(pid) - self._started[name], 2) for name, pid in self.processes.items()
        }


def _dev_servers(settings: Settings) -> dict[str, int]:
    """The local stack's broker and ClickHouse pids, when the bench runs against them."""
    from streams.dev.stack import LocalStack

    stack = LocalStack(settings)
    found: dict[str, int] = {}
    if stack.kafka_bootstrap == settings.kafka_bootstrap and (pid := stack.kafka().pid()):
        found["broker (Tansu)"] = pid
    if (pid := stack.clickhouse().pid()) and settings.clickhouse_port == stack.clickhouse_port:
        found["ClickHouse"] = pid
    return found


def _cpu_report(
    phase: str, events: int, wall: float, cpu: dict[str, float], report: Report
) -> dict[str, Any]:
    workers = {name: seconds for name, seconds in cpu.items() if name.startswith("worker")}
    total = sum(workers.values())
    shares = ", ".join(f"{name} {seconds / wall:.0%}" for name, seconds in cpu.items())
    report(f"  {phase}: CPU per process over {wall:.1f}s (100% = one core): {shares}")
    per_cpu_second = {name: round(events / seconds) for name, seconds in workers.items() if seconds > 0}
    if total > 0:
        report(
            f"  {phase}: {events / total:,.0f} events per CPU-second of the whole worker; per process: "
            + ", ".join(f"{name} {n:,}" for name, n in per_cpu_second.items())
        )
    return {
        f"{phase}_wall_s": round(wall, 1),
        f"{phase}_cpu_seconds": cpu,
        f"{phase}_events_per_worker_cpu_second": round(events / total) if total > 0 else None,
        f"{phase}_events_per_cpu_second_by_process": per_cpu_second,
    }


ROLES: dict[str, list[dict[str, Any]]] = {
    # one process runs every stage
    "single": [{}],
    # two processes of one worker: identity + sinks, and segments
    "split": [{"segments_enabled": False}, {"sink_enabled": False, "identity_enabled": False}],
    # three: identity, the sinks, and segments (the OS schedules the resolver beside the sinks'
    # ClickHouse inserts instead of the GIL)
    "split3": [
        {"segments_enabled": False, "sink_enabled": False},
        {"segments_enabled": False, "identity_enabled": False},
        {"sink_enabled": False, "identity_enabled": False},
    ],
}
ROLE_NAMES = {
    "single": ["worker (all stages)"],
    "split": ["worker: identity + sinks", "worker: segments"],
    "split3": ["worker: identity", "worker: sinks", "worker: segments"],
}


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
        seed(settings, persons, IdentityRules.from_yaml(settings.identity_rules_path), report)
        rng = random.Random(1)
        producer = _sender(settings)
        roles = ROLES[layout]
        report(
            f"starting one worker ({len(roles)} process(es)); "
            f"{settings.kafka_partitions} partition(s) per topic; modules: {compiled_status().describe()}"
        )
        workers = [
            _start_worker(settings, Path(tmp) / f"worker{n}.env", overrides)
            for n, overrides in enumerate(roles)
        ]
        processes = {name: worker.pid for name, worker in zip(ROLE_NAMES[layout], workers, strict=True)}
        meter = CpuMeter({**processes, **_dev_servers(settings), "bench": os.getpid()})
        try:

            def drain(total: int, started: float) -> float:
                last_report = started

                def drained() -> bool:
                    nonlocal last_report
                    for worker in workers:
                        if worker.poll() is not None:
                            raise RuntimeError(f"a worker process exited with {worker.returncode}")
                    segments = _committed(settings, settings.segments_group, resolved)
                    sunk = _committed(settings, settings.sink_group, channels)
                    if time.monotonic() - last_report > 5:
                        last_report = time.monotonic()
                        resolver = _committed(settings, resolver_group(settings), channels)
                        report(
                            f"  {last_report - started:5.0f}s: identity resolver {resolver:,}, "
                            f"segments {segments:,}, history sink {sunk:,}"
                        )
                    return segments >= total and sunk >= total

                _wait(drained, 1800, "the worker to drain the backlog")
                return time.monotonic() - started

            # 1. Start-up: a few events through every stage, so the worker has joined its groups and
            #    loaded the catalog and definitions before anything is timed.
            expected = _WARMUP_EVENTS
            startup = drain(
                expected, _produced(producer, settings, make_events(expected, persons, rng, 90_000_000))
            )
            report(
                f"worker ready: {expected:,} warm-up events through every stage {startup:.1f}s after start"
            )
            # 2. Latency first, while the topics are small: Tansu's memory storage gets slower as a
            #    topic grows (BENCHMARKS.md), which would be measured instead of the pipeline.
            latency = _probe(
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
            )
            expected += latency["probe_events"]
            drain(expected, time.monotonic())
            # 3. Throughput: a backlog (many profiles still new), then a second one (known persons).
            expected += events
            first = drain(expected, _produced(producer, settings, make_events(events, persons, rng, 0)))
            report(f"first backlog: {events:,} events in {first:.1f}s (many profiles new)")
            warm_events = make_events(events, persons, rng, 5_000_000)
            expected += events
            warm = drain(expected, _produced(producer, settings, warm_events, meter))
            warm_cpu = _cpu_report("warm", events, *meter.stop(), report)
            report(f"warm: {events:,} more events (known persons) in {warm:.1f}s")
            alone: dict[str, Any] = {}
            if layout != "single":
                expected += events
                alone = _each_alone(
                    settings,
                    layout,
                    workers,
                    lambda: _start_worker(settings, Path(tmp) / "worker-segments.env", roles[-1]),
                    producer,
                    meter,
                    expected,
                    events,
                    report,
                    make_events(events, persons, rng, 7_000_000),
                )
            worker_rss = sum(_process_rss(worker.pid) for worker in workers)
        finally:
            for worker in workers:
                _stop(worker)
            _close_offset_clients()
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
    _stop(workers[-1])
    segments_start = _committed(settings, settings.segments_group, resolved)

    def upstream_done() -> bool:
        for process in upstream:
            if process.poll() is not None:
                raise RuntimeError(f"an identity or sinks process exited with {process.returncode}")
        return (
            _committed(settings, resolver_group(settings), channels) >= expected
            and _committed(settings, settings.sink_group, channels) >= expected
            and _committed(settings, identity_sink_group(settings), resolved) >= expected
        )

    segments_name = ROLE_NAMES[layout][-1]
    del meter.processes[segments_name]
    started = _produced(producer, settings, backlog, meter)
    _wait(upstream_done, 600, "identity + sinks to drain the backlog alone")
    identity_s = time.monotonic() - started
    identity_cpu = _cpu_report("alone_identity_sinks", events, *meter.stop(), report)

    changes_topic = settings.topic(SEGMENT_CHANGES_TOPIC.name)
    changes_from = _change_offsets(settings, changes_topic)
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
        count = _committed(settings, settings.segments_group, resolved)
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
    started_at = _first_emitted(settings, changes_topic, changes_from, ids)
    ended_at = samples[-1][0]
    if started_at is None or ended_at - started_at < 1.0:
        report("each process alone: too few changes to time the segment process (use a larger --events)")
        return {**result, "alone_segments_events_per_s": None}
    wall = ended_at - started_at
    cpu_from = _interpolated(samples, started_at)
    cpu = {name: round(seconds - cpu_from[name], 2) for name, seconds in samples[-1][1].items()}
    segments_cpu = _cpu_report("alone_segments", events, wall, cpu, report)
    report(
        f"each process alone: segments {events / wall:,.0f} events/s ({events:,} events in {wall:.1f}s, "
        "from the first change they caused to the final commit; "
        f"{result.get('alone_segments_to_final_commit_events_per_s', 0):,} events/s from its first commit)"
    )
    return {**result, "alone_segments_events_per_s": round(events / wall), **segments_cpu}


def _change_offsets(settings: Settings, topic: str) -> list[TopicPartition]:
    """Where to start reading ``topic`` for what is written after now: at or before each end (Tansu's
    ListOffsets can answer too low; reading a few older records is harmless, they are filtered)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "bench-probe"})
    try:
        return [
            TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1])
            for p in partitions_of(consumer, topic, 30)
        ]
    finally:
        consumer.close()


def _first_emitted(
    settings: Settings, topic: str, start: list[TopicPartition], ids: set[str]
) -> float | None:
    """The earliest emittedAt (epoch seconds) of the changes on ``topic`` that events with ``ids`` caused."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "bench-probe",  # assign only: never joined or committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    first: list[float] = []

    def on_message(msg: Message) -> None:
        value = msg.value()
        if value:
            change = SEGMENT_CHANGE_CODEC.decode(value)
            if change["messageId"] in ids:
                at = change["emittedAt"].timestamp()
                if not first or at < first[0]:
                    first[:] = [at]

    try:
        read_to_end(consumer, start, on_message, 300)
    finally:
        consumer.close()
    return first[0] if first else None


def _interpolated(samples: list[tuple[float, dict[str, float]]], at: float) -> dict[str, float]:
    """The CPU seconds per process at wall-clock time ``at``, between the two samples around it."""
    before = max((s for s in samples if s[0] <= at), key=lambda s: s[0], default=samples[0])
    after = min((s for s in samples if s[0] >= at), key=lambda s: s[0], default=samples[-1])
    if after[0] <= before[0]:
        return before[1]
    share = (at - before[0]) / (after[0] - before[0])
    return {name: seconds + share * (after[1][name] - seconds) for name, seconds in before[1].items()}


def _sender(settings: Settings) -> Producer:
    """The load generator's producer: sent like the worker's (a :class:`Sender`, ``kafka_linger_ms``)."""
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": PACED_LINGER_MS,
            "queue.buffering.max.messages": 2_000_000,  # a whole backlog may be queued at once
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        }
    )


def _produced(
    producer: Producer, settings: Settings, events: list[Event], meter: CpuMeter | None = None
) -> float:
    """Produce ``events``; returns the monotonic time it started (the drain's clock).

    The records are encoded before the clock (and ``meter``) starts: encoding in Python here (~30 µs an
    event) would otherwise pace the backlog, and the drain would measure the benchmark, not the worker.
    """
    records = [
        (settings.channel_topic(e.context.channel), EVENT_CODEC.encode(e.to_avro()), e.partition_key())
        for e in events
    ]
    if meter is not None:
        meter.start()
    started = time.monotonic()
    sender = Sender(producer, settings.kafka_linger_ms)
    for n, (topic, value, key) in enumerate(records):
        producer.produce(topic, value, key)
        if not n % 1000:
            sender.pending = True
            sender.tick()
            producer.poll(0)
    producer.flush(60)
    return started


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


def _write_probe_log(
    path: Path,
    sent: dict[str, float],
    actual: dict[str, float],
    latency: dict[str, float],
    to_evaluated: dict[str, float],
) -> None:
    """One line per probe seen, in scheduled order: the scheduled send time (Unix seconds), the time
    the bench actually produced it, the latency to reading its change and to its evaluation (ms).
    Where the tail comes from (pauses, bursts) shows in time, not in the percentiles."""
    lines = ["scheduled_s\tproduced_s\tevent_to_change_ms\tsend_to_evaluated_ms\n"]
    for mid in sorted(latency, key=sent.__getitem__):
        evaluated = to_evaluated.get(mid)
        lines.append(
            f"{sent[mid]:.4f}\t{actual.get(mid, sent[mid]):.4f}\t{latency[mid]:.1f}\t"
            f"{'' if evaluated is None else f'{evaluated:.1f}'}\n"
        )
    path.write_text("".join(lines))


def _probe(
    settings: Settings,
    persons: int,
    rate: int,
    seconds: float,
    rng: random.Random,
    offset: int,
    report: Report,
    meter: CpuMeter | None = None,
    *,
    hops: bool = False,
    probe_log: Path | None = None,
) -> dict[str, Any]:
    """Offer ``rate`` events/s; every tenth is a probe; latency = produce -> read on segments.changes.

    With ``probe_log``, one line per probe seen goes to that file (see :func:`_write_probe_log`).

    With ``hops``, a second reader tails ``events.resolved`` for the probes' ``resolvedAt`` (the time to
    the resolver). It reads the whole topic, which costs the bench and the broker CPU that the measured
    processes then lack, so it is off unless asked for.
    """
    count = int(rate * seconds)
    order = list(range(persons))
    rng.shuffle(order)
    probe_events = []
    for n in range(count):
        k = offset + 1_000_000 + n
        if n % 10 == 0:  # a probe, each to a different person so it always enters
            probe_events.append(
                Event.model_validate(_event_data(k, order[(n // 10) % persons], rng, PROBE_EVENT))
            )
        else:
            probe_events.append(
                Event.model_validate(_event_data(k, rng.randrange(persons), rng, rng.choice(_NAMES)))
            )
    wanted = {e.messageId for e in probe_events if e.event == PROBE_EVENT}
    sent: dict[str, float] = {}
    from_send: dict[str, float] = {}
    to_evaluated: dict[str, float] = {}  # scheduled send -> the segment stage evaluated it (change "at")
    to_resolved: dict[str, float] = {}  # scheduled send -> the resolver resolved it (its "resolvedAt")
    latency: dict[str, float] = {}

    def on_change(value: bytes, seen_at: float) -> None:
        if _PROBE_SEGMENT not in value:
            return  # most changes: skip decoding, so the reader keeps up with the topic
        change = SEGMENT_CHANGE_CODEC.decode(value)
        mid = change["messageId"]
        if change["segmentId"] == "probe" and mid in wanted and mid not in latency and mid in sent:
            latency[mid] = (seen_at - sent[mid]) * 1000
            from_send[mid] = (seen_at - actual.get(mid, sent[mid])) * 1000
            to_evaluated[mid] = (change["at"].timestamp() - sent[mid]) * 1000

    def on_resolved(value: bytes, seen_at: float) -> None:
        if _PROBE_NAME not in value:
            return
        record = RESOLVED_CODEC.decode(value)
        mid = record["event"]["messageId"]
        if mid in wanted and mid in sent:
            to_resolved[mid] = (record["resolvedAt"].timestamp() - sent[mid]) * 1000

    reader = TailReader(
        settings, settings.topic(SEGMENT_CHANGES_TOPIC.name), on_change, lambda: len(latency) >= len(wanted)
    )
    resolved_topic = settings.topic(RESOLVED_TOPIC.name)
    resolved_reader = (
        TailReader(settings, resolved_topic, on_resolved, lambda: len(to_resolved) >= len(wanted))
        if hops
        else None
    )
    reader.start()
    if resolved_reader is not None:
        resolved_reader.start()
    # Open-loop load: every record is encoded up front with its scheduled send time as timestamp and
    # receivedAt, then sent on schedule; latency counts from the scheduled time (no coordinated omission).
    start_at = time.time() + 1.0 + count * 100e-6
    encoded: list[tuple[float, str, bytes, bytes, str]] = []
    for n, event in enumerate(probe_events):
        at = start_at + n / rate
        record = event.to_avro()
        record["timestamp"] = record["receivedAt"] = datetime.fromtimestamp(at, UTC)
        topic = settings.channel_topic(event.context.channel)
        encoded.append((at, topic, EVENT_CODEC.encode(record), event.partition_key(), event.messageId))
    producer = _sender(settings)
    sender = Sender(producer, settings.kafka_linger_ms)
    actual: dict[str, float] = {}
    gc.collect()
    gc.freeze()  # the pre-encoded load is not garbage; keep GC pauses out of the send loop
    late_by = time.time() - start_at
    report(f"latency probe: sending {count:,} events at {rate:,}/s ({seconds:.0f}s)")
    time.sleep(max(0.0, start_at - time.time()))
    started = time.monotonic()
    if meter is not None:
        meter.start()
    for at, topic, value, key, message_id in encoded:
        delay = at - time.time()
        if delay > 0.002:
            time.sleep(delay)
        sent[message_id] = at
        actual[message_id] = time.time()
        producer.produce(topic, value, key)
        sender.pending = True
        sender.tick()  # also when the sender runs behind schedule and never sleeps
        producer.poll(0)
    producer.flush(60)
    achieved = count / (time.monotonic() - started)
    cpu = _cpu_report("probe", count, *meter.stop(), report) if meter is not None else {}
    reader.finish()
    if resolved_reader is not None:
        resolved_reader.finish()
    values = list(latency.values())
    if probe_log is not None:
        _write_probe_log(probe_log, sent, actual, latency, to_evaluated)
    report(
        f"latency probe: {len(values):,} of {len(wanted):,} probes seen at {achieved:,.0f} events/s offered; "
        f"event -> change p50 {_percentile(values, 0.5):,.0f} ms, p99 {_percentile(values, 0.99):,.0f} ms"
    )
    return {
        "probe_offered_events_per_s": rate,
        "probe_achieved_events_per_s": round(achieved),
        "probes": len(wanted),
        "probe_events": count,
        "probes_missing": len(wanted) - len(values),
        "event_to_change_latency_ms_p50": round(_percentile(values, 0.5), 1),
        "event_to_change_latency_ms_p99": round(_percentile(values, 0.99), 1),
        "event_to_change_latency_ms_max": round(max(values), 1) if values else None,
        "from_actual_send_latency_ms_p50": round(_percentile(list(from_send.values()), 0.5), 1),
        "from_actual_send_latency_ms_p99": round(_percentile(list(from_send.values()), 0.99), 1),
        # where the time went (ms resolution, the workers' clocks): up to the resolver's batch ...
        "send_to_resolved_ms_p50": round(_percentile(list(to_resolved.values()), 0.5), 1) if hops else None,
        "send_to_resolved_ms_p99": round(_percentile(list(to_resolved.values()), 0.99), 1) if hops else None,
        # ... and up to the segment stage's evaluation
        "send_to_evaluated_ms_p50": round(_percentile(list(to_evaluated.values()), 0.5), 1),
        "send_to_evaluated_ms_p99": round(_percentile(list(to_evaluated.values()), 0.99), 1),
        "sender_started_late_by_s": round(max(0.0, late_by), 2),
        **cpu,
    }
