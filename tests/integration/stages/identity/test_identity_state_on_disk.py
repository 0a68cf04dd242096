"""Identity state on disk (``state_dir``) on the real Tansu broker: a resolver and a link writer with a
small cache resolve a stream, stop, start again on the same disk and read only what changed since, and
publish what the single-threaded domain (in memory) decides. A replica whose topic was recreated reads
it whole."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.domain.events import Event
from streams.domain.identity import IdentityRules
from streams.settings import Settings
from streams.stages.identity.link_writer import LinkWriter
from streams.stages.identity.resolver import AssignmentReplica, Resolver
from streams.wire.codecs import EVENT_CODEC, IDENTITY_ASSIGNMENT_CODEC
from tests.integration.stages.identity.test_identity_stream import (
    check_against_reference,
    read_all,
    shop_stream,
)

pytestmark = pytest.mark.integration

CACHE = 1_000  # the smallest setting; the stream has about 1,500 identifiers


class Worker:
    """A resolver and a link writer in threads of this process, as ``omniseg worker`` runs them."""

    def __init__(self, settings: Settings, rules: IdentityRules) -> None:
        self.resolver = Resolver(settings, rules)
        self.writer = LinkWriter(settings, rules)
        self.threads = [threading.Thread(target=s.run, daemon=True) for s in (self.resolver, self.writer)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        wait_for(lambda: self.resolver.ready.is_set(), 120, "the resolver to load its replica")
        wait_for(self.writer.owning.is_set, 120, "the link writer to own the link log")

    def handled(self) -> int:
        return self.resolver.stats.resolved + self.writer.stats.linked

    def stop(self) -> None:
        for stage in (self.resolver, self.writer):
            stage.stop()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive(), "a stage did not stop"


@pytest.fixture
def running() -> Iterator[list[Worker]]:
    workers: list[Worker] = []
    try:
        yield workers
    finally:
        for worker in workers:
            if any(t.is_alive() for t in worker.threads):
                worker.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def send(settings: Settings, events: list[Event]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})
    for event in events:
        topic = settings.channel_topic(event.context.channel)
        producer.produce(topic, EVENT_CODEC.encode(event.to_avro()), event.partition_key())
    assert producer.flush(30) == 0


def usable(rules: IdentityRules, events: list[Event]) -> int:
    return sum(1 for e in events if rules.extract(e).identifiers)


def test_restart_on_the_same_disk_reads_only_new_records_and_resolves_as_in_memory(
    settings_factory: Callable[..., Settings], running: list[Worker], tmp_path: Path
) -> None:
    settings = settings_factory(
        identity_group=f"identity-{tmp_path.name[-12:]}",
        state_dir=tmp_path / "state",
        identity_cache_identifiers=CACHE,
        identity_batch_size=200,
    )
    rules = IdentityRules.from_yaml(settings.identity_rules_path)
    stream = shop_stream(customers=300, events=3000, seed=11)
    first, second = stream[:2000], stream[2000:]

    worker = Worker(settings, rules)
    running.append(worker)
    worker.start()
    assert worker.resolver.stats.replica_records == 0  # a new topic and an empty store
    send(settings, first)
    wait_for(lambda: worker.handled() >= usable(rules, first), 120, "the first part resolved")
    graph = worker.writer.state.graph  # type: ignore[union-attr]
    identifiers = len(graph)
    assert identifiers > CACHE, "the graph must outgrow the cache"
    stored = worker.writer.step.stored
    assert stored is not None and stored.in_memory() <= CACHE + stored.store.pending()
    # The replica reads the writer's assignments behind it: stop once it has applied them all, so the
    # restart's count is what the store kept, not what the first run had not read yet.
    published = len(read_all(settings, "identity.assignments"))
    wait_for(lambda: worker.resolver.stats.replica_records >= published, 60, "the replica to catch up")
    worker.stop()
    late = len(read_all(settings, "identity.assignments")) - published  # written after the wait

    again = Worker(settings, rules)
    running.append(again)
    again.start()
    # Only the partitions' last applied records (each read again as the check that the partition is
    # the one the store read), and what was written after the wait; not the ~published records.
    assert again.resolver.stats.replica_records <= settings.kafka_partitions + late, (
        again.resolver.stats.replica_records,
        published,
    )
    assert again.writer.step.stored is not None
    assert again.writer.step.stored.last_read <= 4 * settings.kafka_partitions + 200, (
        again.writer.step.stored.last_read,
        published,
    )
    assert len(again.writer.state.graph) == identifiers  # type: ignore[union-attr]
    send(settings, second)
    wait_for(lambda: again.handled() >= usable(rules, second), 120, "the second part resolved")
    again.stop()
    check_against_reference(settings, stream)


def test_replica_reads_a_recreated_topic_whole(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    group = f"identity-{tmp_path.name[-12:]}"
    state = tmp_path / "state"
    old = settings_factory(identity_group=group, state_dir=state, identity_cache_identifiers=CACHE)
    _publish_assignments(old, [f"anonymous_id:old-{n}" for n in range(300)], "old-person")
    replica = AssignmentReplica(old)
    try:
        assert replica.load(30) == 300
        assert replica.owners.get("anonymous_id:old-7") == "old-person"
    finally:
        replica.close()
    # The same group and disk, a new (shorter) topic: the store's positions are beyond its end.
    new = settings_factory(identity_group=group, state_dir=state, identity_cache_identifiers=CACHE)
    _publish_assignments(new, [f"anonymous_id:new-{n}" for n in range(20)], "new-person")
    replica = AssignmentReplica(new)
    try:
        assert replica.load(30) == 20
        assert replica.owners.get("anonymous_id:old-7") is None
        assert replica.owners.get("anonymous_id:new-7") == "new-person"
        assert len(replica.owners) == 20
    finally:
        replica.close()
    # Unchanged since: a restart reads one record per partition that has any.
    replica = AssignmentReplica(new)
    try:
        assert replica.load(30) <= new.kafka_partitions
        assert len(replica.owners) == 20
    finally:
        replica.close()


def _publish_assignments(settings: Settings, keys: list[str], person: str) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    topic = settings.topic("identity.assignments")
    for key in keys:
        record = {
            "identifier": key,
            "kind": "anonymous_id",
            "personId": person,
            "version": 1,
            "firstSeen": 1,
            "at": 1,
        }
        producer.produce(topic, IDENTITY_ASSIGNMENT_CODEC.encode(record), key.encode())
    assert producer.flush(30) == 0
