"""`omniseg bench identity`: throughput, latency and memory of identity resolution on a running broker.

Phases, on a fresh topic prefix and identity group (the stack's own data is untouched):

1. Seed: ``persons`` shoppers with four identifiers each (customer id, email, cookie, device) are
   linked offline by the domain and published to ``identity.assignments`` / ``identity.persons``,
   as the link writer would have.
2. Memory: one worker's resolver loads its replica, then its link writer rebuilds the graph; the
   process RSS grows by each, reported per million identifiers.
3. Throughput: ``events`` pre-produced events (about ``link_ratio`` of them with a never-seen cookie,
   i.e. link events; the rest known identifiers) are drained by one worker (resolver + link writer
   threads in this process); events/s is measured until every event is on ``events.resolved``.
4. Latency: a steady offered load; for each event, the time from its ``receivedAt`` (stamped when it is
   produced) until a consumer reads it from ``events.resolved``, split by fast path and link path.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from streams.bench.measure import Report, percentile, rss_bytes, wait_until
from streams.bench.tail import TailReader
from streams.dev.workload import identity_events, shopper_identifiers
from streams.domain.events import Event
from streams.domain.identity import IdentityGraph, IdentityRules
from streams.domain.resolution import LinkState
from streams.settings import Settings
from streams.stages.identity.link_writer import LinkWriter
from streams.stages.identity.resolver import Resolver
from streams.topics import IDENTITY_ASSIGNMENTS_TOPIC, IDENTITY_PERSONS_TOPIC, RESOLVED_TOPIC
from streams.wire.codecs import EVENT_CODEC, IDENTITY_ASSIGNMENT_CODEC, IDENTITY_PERSON_CODEC, RESOLVED_CODEC
from streams.wire.identity import RecordReader

_RESOLVED = RecordReader(RESOLVED_CODEC)
_I_EVENT = _RESOLVED.index("event")


def seed(settings: Settings, persons: int, rules: IdentityRules, report: Report) -> int:
    """Publish the state of ``persons`` linked shoppers; returns the identifiers published."""
    state = LinkState(IdentityGraph(rules))
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 20,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        }
    )
    assignments = settings.topic(IDENTITY_ASSIGNMENTS_TOPIC.name)
    people = settings.topic(IDENTITY_PERSONS_TOPIC.name)
    count = 0
    for i in range(persons):
        result = state.apply(shopper_identifiers(i), 1_700_000_000_000 + i, f"seed-{i}", "web", version=i)
        for record in result.assignments:
            producer.produce(
                assignments, IDENTITY_ASSIGNMENT_CODEC.encode(record), record["identifier"].encode()
            )
            count += 1
        for record in result.persons:
            producer.produce(people, IDENTITY_PERSON_CODEC.encode(record), record["personId"].encode())
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    report(f"seeded {persons:,} persons, {count:,} identifiers")
    return count


def _producer(settings: Settings) -> Producer:
    return Producer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "linger.ms": 5,
            "compression.type": "lz4",
            "partitioner": "murmur2_random",
        }
    )


def _produce(producer: Producer, settings: Settings, events: list[Event], stamp: bool) -> None:
    for event in events:
        record = event.to_avro()
        if stamp:
            record["receivedAt"] = datetime.now(UTC)
        topic = settings.channel_topic(event.context.channel)
        producer.produce(topic, EVENT_CODEC.encode(record), event.partition_key())
        producer.poll(0)
    producer.flush(60)


def run_identity_bench(
    base: Settings,
    *,
    persons: int,
    events: int,
    link_ratio: float,
    probe_rate: int,
    probe_seconds: float,
    report: Report,
) -> dict[str, Any]:
    from streams.dev.stack import create_topics

    suffix = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={"topic_prefix": f"bench-identity-{suffix}.", "identity_group": f"bench-identity-{suffix}"}
    )
    create_topics(settings)
    rules = IdentityRules.from_yaml(settings.identity_rules_path)
    identifiers = seed(settings, persons, rules, report)
    rng = random.Random(1)
    _produce(_producer(settings), settings, identity_events(events, persons, link_ratio, rng, 0), stamp=False)
    report(f"produced {events:,} events ({link_ratio:.1%} with a new cookie)")

    resolver, writer = Resolver(settings, rules), LinkWriter(settings, rules)
    base_rss = rss_bytes()
    threads = [threading.Thread(target=resolver.run, daemon=True)]
    threads[0].start()
    started = time.monotonic()
    wait_until(lambda: resolver.ready.is_set(), 300, "the resolver to load its replica and join")
    replica_rss = rss_bytes()
    threads.append(threading.Thread(target=writer.run, daemon=True))
    threads[1].start()
    wait_until(lambda: writer.owning.is_set(), 300, "the link writer to rebuild its graph")
    graph_rss = rss_bytes()
    try:
        wait_until(
            lambda: resolver.stats.resolved + writer.stats.linked >= events, 600, "every event resolved"
        )
        elapsed = time.monotonic() - started
        report(f"cold worker: {events:,} events in {elapsed:.1f}s (replica load and graph rebuild included)")
        throughput = {
            "cold_events_per_s_including_startup": round(events / elapsed),
            "fast_path_events": resolver.stats.resolved,
            "link_path_events": writer.stats.linked,
        }
        latency = run_probe(settings, persons, probe_rate, probe_seconds, rng, events, report)
    finally:
        resolver.stop()
        writer.stop()
        for thread in threads:
            thread.join(30)
    steady = _steady_rate(settings, resolver, writer, persons, link_ratio, rng, events, report)
    return {
        "command_settings": {
            "persons": persons,
            "events": events,
            "link_ratio": link_ratio,
            "probe_rate": probe_rate,
            "probe_seconds": probe_seconds,
            "state_dir": str(settings.state_dir) if settings.state_dir is not None else None,
            "identity_cache_identifiers": settings.identity_cache_identifiers,
        },
        "identifiers": identifiers,
        "replica_rss_bytes_per_million_identifiers": round((replica_rss - base_rss) / identifiers * 1e6),
        "graph_rss_bytes_per_million_identifiers": round((graph_rss - replica_rss) / identifiers * 1e6),
        "graph_rebuild_s": round(writer.stats.rebuild_s, 2),
        **throughput,
        **steady,
        **latency,
    }


def _steady_rate(
    settings: Settings,
    resolver: Resolver,
    writer: LinkWriter,
    persons: int,
    link_ratio: float,
    rng: random.Random,
    offset: int,
    report: Report,
) -> dict[str, Any]:
    """Events/s of one warm worker: a second backlog drained once replica and graph are loaded."""
    del resolver, writer
    rules = IdentityRules.from_yaml(settings.identity_rules_path)
    n = 200_000
    backlog = identity_events(n, persons, link_ratio, rng, offset + 10_000_000)
    _produce(_producer(settings), settings, backlog, stamp=False)
    resolver, writer = Resolver(settings, rules), LinkWriter(settings, rules)
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in (resolver, writer)]
    for thread in threads:
        thread.start()
    try:
        wait_until(
            lambda: resolver.ready.is_set() and writer.owning.is_set(), 300, "the second worker to start"
        )
        before = resolver.stats.resolved + writer.stats.linked  # the first batch, read while joining
        started = time.monotonic()
        # On the same disk (state_dir), the second worker reads only what was published since.
        restart_read = {
            "warm_start_replica_records_read": resolver.stats.replica_records,
            "warm_start_graph_rebuild_s": round(writer.stats.rebuild_s, 2),
        }
        if writer.step.stored is not None:
            restart_read["warm_start_graph_records_read"] = writer.step.stored.last_read
        wait_until(lambda: resolver.stats.resolved + writer.stats.linked >= n, 600, "the second backlog")
        elapsed = time.monotonic() - started
        n -= before
    finally:
        resolver.stop()
        writer.stop()
        for thread in threads:
            thread.join(30)
    report(f"warm worker: {n:,} events in {elapsed:.2f}s")
    return {"events_per_s_per_worker": round(n / elapsed), **restart_read}


def run_probe(
    settings: Settings,
    persons: int,
    rate: int,
    seconds: float,
    rng: random.Random,
    offset: int,
    report: Report,
) -> dict[str, Any]:
    """Offer ``rate`` events/s for ``seconds``; latency from receivedAt to reading events.resolved."""
    count = int(rate * seconds)
    probe_events = identity_events(count, persons, 0.03, rng, offset + 1_000_000)
    links = {e.messageId for e in probe_events if e.anonymousId and e.anonymousId.startswith("new-")}
    wanted = {e.messageId for e in probe_events}
    latency: dict[str, float] = {}  # first sighting per messageId (duplicates are not counted twice)

    def on_resolved(value: bytes, seen_at: float) -> None:
        mid, received = _message_and_received(value)
        if mid in wanted and mid not in latency:
            latency[mid] = seen_at * 1000 - received

    reader = TailReader(
        settings, settings.topic(RESOLVED_TOPIC.name), on_resolved, lambda: len(latency) >= count
    )
    reader.start()
    tick = 0.05
    per_tick = max(1, int(rate * tick))
    producer = _producer(settings)
    started = time.monotonic()
    for start in range(0, count, per_tick):
        _produce(producer, settings, probe_events[start : start + per_tick], stamp=True)
        next_at = started + (start // per_tick + 1) * tick
        time.sleep(max(0.0, next_at - time.monotonic()))
    achieved = count / (time.monotonic() - started)
    reader.finish()
    missing = sorted(wanted - set(latency))
    report(f"latency probe: {len(latency):,} of {count:,} events seen; missing {missing[:5]}")
    fast = [ms for mid, ms in latency.items() if mid not in links]
    slow = [ms for mid, ms in latency.items() if mid in links]
    return {
        "probe_offered_events_per_s": rate,
        "probe_achieved_events_per_s": round(achieved),
        "probe_events_missing": len(missing),
        "fast_path_latency_ms_p50": round(percentile(fast, 0.5), 1),
        "fast_path_latency_ms_p99": round(percentile(fast, 0.99), 1),
        "link_path_latency_ms_p50": round(percentile(slow, 0.5), 1),
        "link_path_latency_ms_p99": round(percentile(slow, 0.99), 1),
        "all_latency_ms_p99": round(percentile(fast + slow, 0.99), 1),
    }


def _message_and_received(resolved: bytes) -> tuple[str, float]:
    event = _RESOLVED.decode(resolved)[_I_EVENT]
    return event[0], float(event[-1])  # messageId is the first field, receivedAt (ms) the last
