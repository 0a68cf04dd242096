"""The pipeline benchmark's latency probe: a steady offered load in which every tenth event enters a
probe segment, timed from producing it to reading its change on ``segments.changes``."""

from __future__ import annotations

import gc
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.bench.audience_probe import AudienceWatch
from streams.bench.measure import (
    CpuMeter,
    Report,
    cpu_report,
    percentile,
)
from streams.bench.tail import TailReader
from streams.dev.workload import (
    EVENT_NAMES,
    event_data,
)
from streams.domain.events import Event
from streams.kafka.reading import partitions_of, read_to_end
from streams.kafka.sending import PACED_LINGER_MS, Sender
from streams.settings import Settings
from streams.topics import RESOLVED_TOPIC, SEGMENT_CHANGES_TOPIC
from streams.wire.codecs import EVENT_CODEC, RESOLVED_CODEC, SEGMENT_CHANGE_CODEC

PROBE_EVENT = "Bench Probe"
_PROBE_NAME = PROBE_EVENT.encode()  # found in the raw bytes of a resolved probe event


_PROBE_SEGMENT = b"\x0aprobe"  # the Avro string "probe" (zig-zag length 5), as in a change of that segment


def change_offsets(settings: Settings, topic: str) -> list[TopicPartition]:
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


def first_emitted(settings: Settings, topic: str, start: list[TopicPartition], ids: set[str]) -> float | None:
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


def probe_producer(settings: Settings) -> Producer:
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


def produced(
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


def write_probe_log(
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


def run_probe(
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
    audiences: bool = False,
) -> dict[str, Any]:
    """Offer ``rate`` events/s; every tenth is a probe; latency = produce -> read on segments.changes.

    With ``probe_log``, one line per probe seen goes to that file (see :func:`write_probe_log`).

    With ``hops``, a second reader tails ``events.resolved`` for the probes' ``resolvedAt`` (the time to
    the resolver). It reads the whole topic, which costs the bench and the broker CPU that the measured
    processes then lack, so it is off unless asked for.

    With ``audiences``, a thread also polls ClickHouse for the probes' persons' hashes in an audience
    delta (:mod:`streams.bench.audience_probe`; the bench's destination must be published).
    """
    count = int(rate * seconds)
    order = list(range(persons))
    rng.shuffle(order)
    probe_events = []
    probe_persons: list[tuple[str, int]] = []
    for n in range(count):
        k = offset + 1_000_000 + n
        if n % 10 == 0:  # a probe, each to a different person so it always enters
            person = order[(n // 10) % persons]
            probe_events.append(Event.model_validate(event_data(k, person, rng, PROBE_EVENT)))
            probe_persons.append((probe_events[-1].messageId, person))
        else:
            probe_events.append(
                Event.model_validate(event_data(k, rng.randrange(persons), rng, rng.choice(EVENT_NAMES)))
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
    watch = AudienceWatch(settings, probe_persons) if audiences else None
    reader.start()
    if resolved_reader is not None:
        resolved_reader.start()
    if watch is not None:
        watch.start()
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
    producer = probe_producer(settings)
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
    cpu = cpu_report("probe", count, *meter.stop(), report) if meter is not None else {}
    reader.finish()
    if resolved_reader is not None:
        resolved_reader.finish()
    audience: dict[str, Any] = {}
    if watch is not None:
        watch.finish(30)
        visible = [(seen - sent[mid]) * 1000 for mid, seen in watch.seen.items() if mid in sent]
        report(
            f"latency probe: {len(visible):,} of {watch.wanted:,} probes visible in an audience delta; "
            f"event -> delta p50 {percentile(visible, 0.5):,.0f} ms, p99 {percentile(visible, 0.99):,.0f} ms"
        )
        audience = {
            "event_to_audience_delta_ms_p50": round(percentile(visible, 0.5), 1),
            "event_to_audience_delta_ms_p99": round(percentile(visible, 0.99), 1),
            "probes_missing_in_audience": watch.wanted - len(visible),
        }
    values = list(latency.values())
    if probe_log is not None:
        write_probe_log(probe_log, sent, actual, latency, to_evaluated)
    report(
        f"latency probe: {len(values):,} of {len(wanted):,} probes seen at {achieved:,.0f} events/s offered; "
        f"event -> change p50 {percentile(values, 0.5):,.0f} ms, p99 {percentile(values, 0.99):,.0f} ms"
    )
    return {
        "probe_offered_events_per_s": rate,
        "probe_achieved_events_per_s": round(achieved),
        "probes": len(wanted),
        "probe_events": count,
        "probes_missing": len(wanted) - len(values),
        "event_to_change_latency_ms_p50": round(percentile(values, 0.5), 1),
        "event_to_change_latency_ms_p99": round(percentile(values, 0.99), 1),
        "event_to_change_latency_ms_max": round(max(values), 1) if values else None,
        "from_actual_send_latency_ms_p50": round(percentile(list(from_send.values()), 0.5), 1),
        "from_actual_send_latency_ms_p99": round(percentile(list(from_send.values()), 0.99), 1),
        # where the time went (ms resolution, the workers' clocks): up to the resolver's batch ...
        "send_to_resolved_ms_p50": round(percentile(list(to_resolved.values()), 0.5), 1) if hops else None,
        "send_to_resolved_ms_p99": round(percentile(list(to_resolved.values()), 0.99), 1) if hops else None,
        # ... and up to the segment stage's evaluation
        "send_to_evaluated_ms_p50": round(percentile(list(to_evaluated.values()), 0.5), 1),
        "send_to_evaluated_ms_p99": round(percentile(list(to_evaluated.values()), 0.99), 1),
        "sender_started_late_by_s": round(max(0.0, late_by), 2),
        **audience,
        **cpu,
    }
