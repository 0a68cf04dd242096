"""``omniseg bench ingest``: the history sink's throughput, visibility latency and memory, measured.

Against a running stack (``omniseg dev up``), in isolation from its data: the run gets its own topic
prefix, consumer group and ClickHouse database, all removed afterwards (unless ``keep``).

1. Pre-produce ``events`` realistic, varied events to the four channel topics (confluent-kafka, lz4).
2. Start a real ``omniseg worker`` subprocess and time how fast the backlog lands in ClickHouse
   (from the first row visible to the last, so the group join is not counted).
3. Offer a steady load and probe visibility latency: marker events are produced with their send time
   and polled with ``SELECT message_id FROM events WHERE message_id IN (...)``.
4. Report the worker's peak RSS (VmHWM), then stop it with SIGTERM (and SIGKILL if it hangs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from streams.bench.measure import Report
from streams.dev.sample_events import channel_of, partition_key, sample_event
from streams.dev.stack import apply_migrations, clickhouse_client, create_topics
from streams.settings import CHANNELS, Settings
from streams.topics import physical_names
from streams.wire.codecs import EVENT_CODEC


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
        }
    )


def produce_events(settings: Settings, run: str, count: int, start: int = 0) -> float:
    """Produce ``count`` sample events (indexes ``start``..); returns seconds until all were acked."""
    producer = _producer(settings)
    topics = {channel: settings.channel_topic(channel) for channel in CHANNELS}
    now_ms = int(time.time() * 1000)
    failures: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.perf_counter()
    for index in range(start, start + count):
        record = sample_event(run, index, now_ms + index % 60_000)
        value = EVENT_CODEC.encode(record)
        while True:
            try:
                producer.produce(
                    topics[channel_of(index)], value, partition_key(record), on_delivery=delivered
                )
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(
            f"producing the benchmark events failed: {remaining} unacknowledged, "
            f"{len(failures)} failed ({failures[:3]})"
        )
    return time.perf_counter() - started


def _count(settings: Settings, client: Any, run: str) -> int:
    rows = client.execute(f"SELECT count() FROM events WHERE message_id LIKE '{run}-%'")
    return int(rows[0][0])


def _peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        {
            "OMNISEG_ENV_FILE": "/nonexistent/omniseg.env",
            "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
            "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "OMNISEG_SINK_GROUP": settings.sink_group,
            "OMNISEG_SINK_BATCH_SIZE": str(settings.sink_batch_size),
            "OMNISEG_SINK_FLUSH_INTERVAL_S": str(settings.sink_flush_interval_s),
        }
    )
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, wait, then SIGKILL; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _latency_probe(
    settings: Settings, run: str, rate: int, seconds: float, start_index: int, report: Report
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; every 10th produce batch carries a timed marker."""
    producer = _producer(settings)
    client = clickhouse_client(settings, settings.clickhouse_database)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()
    done = threading.Event()
    now_ms = int(time.time() * 1000)

    def poll_visible() -> None:
        while not done.is_set() or len(seen) < len(sent):
            with lock:
                waiting = [mid for mid in sent if mid not in seen]
            if waiting:
                ids = ", ".join(f"'{mid}'" for mid in waiting)
                found = client.execute(f"SELECT message_id FROM events WHERE message_id IN ({ids})")
                stamp = time.monotonic()
                with lock:
                    for (mid,) in found:
                        seen.setdefault(mid, stamp)
            if done.is_set() and time.monotonic() > deadline:
                return
            time.sleep(0.02)

    deadline = float("inf")
    poller = threading.Thread(target=poll_visible, name="bench-latency-poller", daemon=True)
    poller.start()
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    index = start_index
    started = time.monotonic()
    next_tick = started
    while time.monotonic() - started < seconds:
        for offset in range(per_tick):
            record = sample_event(run, index, now_ms + index % 60_000)
            marker = offset == 0 and int((next_tick - started) / tick) % 2 == 0
            if marker:
                record["messageId"] = f"{run}-probe-{index}"
            producer.produce(
                settings.channel_topic(channel_of(index)),
                EVENT_CODEC.encode(record),
                partition_key(record),
            )
            if marker:
                producer.flush(5)  # the marker's clock starts once the broker acknowledged it
                with lock:
                    sent[record["messageId"]] = time.monotonic()
            index += 1
        producer.poll(0)
        next_tick += tick
        time.sleep(max(0.0, next_tick - time.monotonic()))
    producer.flush(30)
    deadline = time.monotonic() + 15
    done.set()
    poller.join()
    client.disconnect()
    latencies = [seen[mid] - sent[mid] for mid in sent if mid in seen]
    missing = len(sent) - len(latencies)
    if missing:
        report(f"warning: {missing} of {len(sent)} markers not visible within 15 s")
    return {
        "offered_events_per_s": rate,
        "probe_seconds": seconds,
        "probe_events": index - start_index,
        "markers": len(sent),
        "markers_missing": missing,
        "visible_p50_ms": round(percentile(latencies, 0.5) * 1000, 1) if latencies else None,
        "visible_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
        "visible_max_ms": round(max(latencies) * 1000, 1) if latencies else None,
    }


def run_ingest_bench(
    base: Settings,
    events: int = 200_000,
    *,
    probe_rate: int = 5_000,
    probe_seconds: float = 10.0,
    keep: bool = False,
    report: Report = print,
) -> dict[str, Any]:
    """Run the whole benchmark against the stack ``base`` points at; returns the figures."""
    run = f"b{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "topic_prefix": f"{base.topic_prefix}bench-{run}.",
            "clickhouse_database": f"{base.clickhouse_database}_bench_{run}",
            "sink_group": f"bench-sink-{run}",
        }
    )
    create_topics(settings)
    apply_migrations(settings, report=lambda _msg: None)
    log_path = Path(f"/tmp/omniseg-bench-ingest-{run}.log")
    proc: subprocess.Popen[bytes] | None = None
    client = clickhouse_client(settings, settings.clickhouse_database)
    try:
        report(f"producing {events} events to {settings.topic_prefix}events.* ...")
        produce_s = produce_events(settings, run, events)
        report(f"produced in {produce_s:.1f}s ({events / produce_s:,.0f} ev/s); starting the worker")
        proc = start_worker(settings, log_path)
        first_at: float | None = None
        first_count = 0
        deadline = time.monotonic() + 120 + events / 5_000
        count = 0
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}; see {log_path}")
            count = _count(settings, client, run)
            now = time.monotonic()
            if count and first_at is None:
                first_at, first_count = now, count
            if count >= events:
                break
            if now > deadline:
                raise RuntimeError(f"only {count} of {events} events arrived in time; see {log_path}")
            time.sleep(0.05)
        drained_at = time.monotonic()
        assert first_at is not None
        seconds = drained_at - first_at
        rate = (count - first_count) / seconds if seconds > 0 else float("nan")
        report(f"backlog: {count} events in ClickHouse, {rate:,.0f} ev/s; probing latency ...")
        probe = _latency_probe(settings, run, probe_rate, probe_seconds, events, report)
        rss = _peak_rss_mb(proc.pid)
        exit_code = stop_worker(proc)
        dedup = client.execute(f"SELECT count() FROM events_dedup WHERE message_id LIKE '{run}-%'")[0][0]
        return {
            "events": events,
            "produce_events_per_s": round(events / produce_s),
            "sink_events_per_s": round(rate),
            "sink_seconds": round(seconds, 2),
            "sink_batch_size": settings.sink_batch_size,
            "sink_flush_interval_s": settings.sink_flush_interval_s,
            **probe,
            "rows_in_events_dedup": int(dedup),
            "worker_peak_rss_mb": round(rss, 1) if rss is not None else None,
            "worker_exit_code": exit_code,
            "worker_log": str(log_path),
        }
    finally:
        if proc is not None:
            stop_worker(proc)
        if not keep:
            with contextlib.suppress(Exception):
                client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
            with contextlib.suppress(Exception):
                admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
                for future in admin.delete_topics(physical_names(settings)).values():
                    future.result(30)
        client.disconnect()
