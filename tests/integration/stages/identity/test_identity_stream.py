"""Streaming identity on the real Tansu broker: two `omniseg worker` processes, 4 partitions per channel
topic, one worker killed with SIGKILL mid-stream and restarted. Once with the state in memory, once on
disk (both workers share one ``state_dir`` with a cache smaller than the graph; the killed one restarts
on its store).

The reference is the domain run single-threaded over ``identity.links`` in its recorded order (the only
order the policy depends on, docs/identity.md section 5): the published state, the merges and every
event's final person must equal it, whatever the partitioning, the fast path and the crash did.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.domain.events import Event
from streams.domain.identity import IdentityGraph, IdentityRules, PersonRecord
from streams.domain.resolution import LinkState
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.stages.identity.link_writer import writer_group
from streams.wire.codecs import (
    EVENT_CODEC,
    IDENTITY_ASSIGNMENT_CODEC,
    IDENTITY_CHANGE_CODEC,
    IDENTITY_PERSON_CODEC,
    INVALID_CODEC,
    RESOLVED_CODEC,
)

pytestmark = pytest.mark.integration

OMNISEG = str(Path(sys.executable).with_name("omniseg"))
BASE_MS = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1000)


def _event(n: int, channel: str, **fields: Any) -> Event:
    at = datetime.fromtimestamp((BASE_MS + n) / 1000, tz=UTC)
    data: dict[str, Any] = {
        "messageId": f"msg-{n:06d}",
        "type": "track",
        "event": "Viewed",
        "context": {"channel": channel},
        "timestamp": at,
        "receivedAt": at,
    }
    data.update(fields)
    return Event.model_validate(data)


def shop_stream(customers: int, events: int, seed: int) -> list[Event]:
    """Shoppers with cookies, a login, an app device, an email and a loyalty card, seen on every channel;
    two of them share a family iPad (a rejected link); some events carry only junk identifiers."""
    rng = random.Random(seed)
    out: list[Event] = []
    for n in range(events):
        i = rng.randrange(customers)
        user, email, card = f"cust-{i}", f"shopper{i}@mail-shop.co.uk", f"LC{i:06d}"
        cookie = f"{i:08x}-{rng.randrange(3):04x}-4000-8000-00000000abcd"
        device = "family-ipad" if i < 2 else f"{i:012x}"
        roll = rng.random()
        if roll < 0.01:
            out.append(_event(n, "web", anonymousId=rng.choice(["null", "undefined", "anonymous"])))
        elif roll < 0.35:
            out.append(_event(n, "web", anonymousId=cookie))
        elif roll < 0.5:
            out.append(_event(n, "web", userId=user, anonymousId=cookie))
        elif roll < 0.65:
            fields: dict[str, Any] = {"context": {"channel": "app", "device": {"id": device}}}
            if rng.random() < 0.5:
                fields["userId"] = user
            out.append(_event(n, "app", **fields))
        elif roll < 0.8:
            ids = {"email": email.upper() if rng.random() < 0.3 else email, "espSubscriberId": f"esp-{i}"}
            out.append(_event(n, "email", identifiers=ids))
        elif roll < 0.9:
            ids = {"loyaltyCard": card}
            if rng.random() < 0.4:
                ids["email"] = email
            out.append(_event(n, "store", identifiers=ids, store={"storeId": "S1"}))
        else:
            out.append(
                _event(n, "web", type="identify", event=None, userId=user, identifiers={"email": email})
            )
    for n, i in ((events // 10, 0), (events // 2, 1)):  # both parents log in on the family iPad
        device = {"id": "family-ipad"}
        out[n] = _event(n, "app", userId=f"cust-{i}", context={"channel": "app", "device": device})
    return out


class Worker:
    def __init__(self, name: str, settings: Settings, logs: Path, state_dir: Path | None = None) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        self.env = {
            **os.environ,
            "OMNISEG_ENV_FILE": "/nonexistent/omniseg.env",
            "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
            "OMNISEG_IDENTITY_GROUP": settings.identity_group,
            "OMNISEG_SINK_GROUP": settings.sink_group,
            "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
            "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
            "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
            "OMNISEG_IDENTITY_BATCH_SIZE": "500",
        }
        if state_dir is not None:
            self.env["OMNISEG_STATE_DIR"] = str(state_dir)
            self.env["OMNISEG_IDENTITY_CACHE_IDENTIFIERS"] = "1000"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [OMNISEG, "worker", "--log-level", "info"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def last_link_claim(self) -> str:
        """When this worker last took the link log over (its log's timestamp; empty if never)."""
        claims = re.findall(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*link writer: owner of", self.text())
        return claims[-1] if claims else ""

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _reader(settings: Settings) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )


def read_all(settings: Settings, name: str) -> list[Message]:
    topic = settings.topic(name)
    consumer = _reader(settings)
    try:
        out: list[Message] = []
        starts = [TopicPartition(topic, p, -2) for p in partitions_of(consumer, topic, 30)]
        read_to_end(consumer, starts, out.append, 30)
        return sorted(out, key=lambda m: (m.partition(), m.offset()))  # type: ignore[arg-type,return-value]
    finally:
        consumer.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, logs: list[Worker]) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {w.name}\n{w.text()[-3000:]}" for w in logs)
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.5)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


@pytest.mark.parametrize("state", ["memory", "disk"])
def test_two_workers_and_a_kill9_resolve_every_event_and_publish_each_merge_once(
    settings_factory: Callable[..., Settings], workers: list[Worker], tmp_path: Path, state: str
) -> None:
    settings = settings_factory(identity_group=f"identity-{tmp_path.name[-12:]}")
    stream = shop_stream(customers=250, events=4000, seed=7)
    state_dir = tmp_path / "state" if state == "disk" else None
    a, b = Worker("a", settings, tmp_path, state_dir), Worker("b", settings, tmp_path, state_dir)
    workers.extend([a, b])
    a.start()
    b.start()
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "partitioner": "murmur2_random"})

    def send(events: list[Event]) -> None:
        for event in events:
            topic = settings.channel_topic(event.context.channel)
            producer.produce(topic, EVENT_CODEC.encode(event.to_avro()), event.partition_key())
        producer.flush(30)

    expected = {e.messageId for e in stream}
    seen: set[str] = set()
    collector = _reader(settings)
    collector.assign(
        [
            TopicPartition(settings.topic(name), p, -2)
            for name in ("events.resolved", "events.invalid")
            for p in range(settings.kafka_partitions)
        ]
    )

    def collect() -> int:
        for msg in collector.consume(10_000, 0.2):
            if msg.error() is None and msg.value():
                if msg.topic() == settings.topic("events.resolved"):
                    seen.add(RESOLVED_CODEC.decode(msg.value())["event"]["messageId"])  # type: ignore[arg-type]
                else:
                    original = INVALID_CODEC.decode(msg.value())["original"]  # type: ignore[arg-type]
                    seen.add(EVENT_CODEC.decode(original)["messageId"])
        return len(seen & expected)

    third = len(stream) // 3
    try:
        send(stream[:third])
        wait_for(lambda: collect() >= third // 2, 90, "the first events to resolve", [a, b])
        # Kill the worker that owns the link log, while it is working through the second third.
        owner = max((a, b), key=Worker.last_link_claim)
        send(stream[third : 2 * third])
        wait_for(lambda: collect() >= third + 50, 60, "the second third to be under way", [a, b])
        owner.kill9()
        send(stream[2 * third :])
        owner.start()
        wait_for(lambda: collect() == len(expected), 180, "every event resolved", [a, b])
    finally:
        collector.close()
    # Let the writer finish: its committed offset reaches the end of identity.links (read, not asked:
    # Tansu's ListOffsets under-reports after batched produces).
    links = settings.topic("identity.links")
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": writer_group(settings)})
    try:

        def writer_done() -> bool:
            committed = probe.committed([TopicPartition(links, 0)], 10)[0].offset
            end = max((m.offset() for m in read_all(settings, "identity.links")), default=-1) + 1  # type: ignore[type-var]
            return committed == end

        wait_for(writer_done, 60, "the link writer to reach the end of identity.links", [a, b])
    finally:
        probe.close()
    # The link log changed hands: the first owner, then a survivor or the restarted worker took over.
    takeovers = re.findall(r"link writer: owner of \S+ from offset (\d+)", a.text() + b.text())
    print("link log owners took over at offsets", takeovers)
    assert len(takeovers) >= 2 and max(int(o) for o in takeovers) > 0, takeovers
    check_against_reference(settings, stream)


def check_against_reference(settings: Settings, stream: list[Event]) -> None:
    rules = IdentityRules.from_yaml(settings.identity_rules_path)
    # The reference: the domain, single-threaded, over the link log in its recorded order.
    reference = LinkState(IdentityGraph(rules))
    ref_changes: list[dict[str, Any]] = []
    for msg in read_all(settings, "identity.links"):
        event = Event.from_avro(EVENT_CODEC.decode(msg.value()))  # type: ignore[arg-type]
        ids = rules.extract(event).identifiers
        at = int(event.receivedAt.timestamp() * 1000)
        ref_changes += reference.apply(ids, at, event.messageId, event.context.channel, msg.offset()).changes  # type: ignore[arg-type]
    graph = reference.graph

    # Published state == reference state.
    owners: dict[str, str] = {}
    for msg in read_all(settings, "identity.assignments"):
        record = IDENTITY_ASSIGNMENT_CODEC.decode(msg.value())  # type: ignore[arg-type]
        owners[record["identifier"]] = record["personId"]
    persons: dict[str, PersonRecord] = {}
    for msg in read_all(settings, "identity.persons"):
        record = IDENTITY_PERSON_CODEC.decode(msg.value())  # type: ignore[arg-type]
        first = int(record["firstSeen"].timestamp() * 1000)
        persons[record["personId"]] = PersonRecord(first, record["mergedInto"])
    ref_owners, ref_persons = graph.records()
    assert owners == ref_owners
    assert persons == ref_persons

    # Each merge exactly once; rejections (deterministic ids) as decided.
    changes = [IDENTITY_CHANGE_CODEC.decode(m.value()) for m in read_all(settings, "identity.changes")]  # type: ignore[arg-type]
    merges = Counter(c["changeId"] for c in changes if c["kind"] == "merged")
    ref_merges = Counter(c["changeId"] for c in ref_changes if c["kind"] == "merged")
    assert merges == ref_merges
    assert set(merges.values()) == {1}
    assert len(merges) > 10, "the stream should cause merges"
    rejections = {c["changeId"] for c in changes if c["kind"] == "rejected"}
    assert rejections == {c["changeId"] for c in ref_changes if c["kind"] == "rejected"}
    assert any(c["identifiers"] == ["device_id:family-ipad"] for c in changes if c["kind"] == "rejected")

    # Every event resolved, to the person a reader folds through mergedPersonIds.
    # A reader folds any person id into today's person without ordering the changes: among the merges
    # that list it in mergedPersonIds, take the one whose survivor was never merged itself.
    merges_only = [c for c in changes if c["kind"] == "merged"]
    merged_ids = {c["mergedPersonId"] for c in merges_only}
    survivor_of: dict[str, str] = {}
    for change in merges_only:
        if change["personId"] not in merged_ids:
            for pid in change["mergedPersonIds"]:
                assert survivor_of.setdefault(pid, change["personId"]) == change["personId"]
    assert set(survivor_of) == merged_ids
    resolved: dict[str, set[str]] = {}
    raw_resolved: dict[str, list[dict[str, Any]]] = {}
    for msg in read_all(settings, "events.resolved"):
        record = RESOLVED_CODEC.decode(msg.value())  # type: ignore[arg-type]
        person = survivor_of.get(record["personId"], record["personId"])
        resolved.setdefault(record["event"]["messageId"], set()).add(person)
        raw_resolved.setdefault(record["event"]["messageId"], []).append(record)
    invalid = {
        EVENT_CODEC.decode(INVALID_CODEC.decode(m.value())["original"])["messageId"]  # type: ignore[arg-type]
        for m in read_all(settings, "events.invalid")
    }
    per_person: Counter[str] = Counter()
    ref_per_person: Counter[str] = Counter()
    for event in stream:
        ids = rules.extract(event).identifiers
        if not ids:
            assert event.messageId in invalid
            assert event.messageId not in resolved
            continue
        ordered = sorted(ids, key=lambda i: (rules.kinds().index(i.kind), i.key))
        want = graph.person_of(ordered[0])
        got = resolved[event.messageId]
        assert got == {want}, (
            f"{event.messageId} {[i.key for i in ids]}: resolved to {got}, reference {want}; "
            f"{ {p: [i.key for i in graph.identifiers_of(p)] for p in (*got, want) if p} } "
            f"raw {[(r['personId'], r['identifiers']) for r in raw_resolved.get(event.messageId, [])]}"
        )
        per_person[next(iter(got))] += 1
        ref_per_person[want] += 1  # type: ignore[index]
    assert per_person == ref_per_person
    assert set(resolved) <= {e.messageId for e in stream}
    assert invalid, "the stream has junk-only events"
