"""Retention of inactive persons on the real broker (docs/retention.md, "Inactive persons"): an
anonymous person who goes quiet past the policy exits with trigger ``retention`` and its profile goes
from the state (a tombstone, or only its membership counters), a known person is kept, and a returning
anonymous person starts a new profile whose changes continue the history's numbering."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streams.domain.audiences.state import PersonRemoved
from streams.domain.events import Event
from streams.domain.segments.profile import Profile
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from streams.wire.audiences import decode_input
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import event_body, resolved_event
from streams.wire.segments import decode_state
from tests.integration.stages.segments.segment_files import write_definitions
from tests.integration.stages.segments.test_segment_stage import Changes, Clock, Stages

pytestmark = pytest.mark.integration

DAY_S = 86_400.0
DEFINITIONS = {"visitor.yaml": "id: visitor\nwhen: {event: Page Viewed}\n"}


@pytest.fixture
def stages() -> Iterator[Stages]:
    running = Stages()
    yield running
    for stage, thread in list(running.threads.values()):
        stage.stop()
        thread.join(60)
    assert not running.failures, f"a segment stage crashed: {running.failures!r}"


def _resolved(person: str, n: int, clock: Clock, name: str, ids: list[str]) -> bytes:
    now = datetime.fromtimestamp(clock(), tz=UTC)
    known = any(not i.startswith("anonymous_id:") for i in ids)
    event = Event.model_validate(
        {
            "messageId": f"{person}-{n}",
            "type": "track",
            "event": name,
            **({"userId": person} if known else {"anonymousId": person}),
            "context": {"channel": "web"},
            "timestamp": now,
            "receivedAt": now,
        }
    )
    return resolved_event(
        person, ids, int(now.timestamp() * 1000), event_body(EVENT_CODEC.encode(event.to_avro()))
    )


class Latest:
    """The newest record per key of a topic, read from the beginning as the test goes."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(
            {"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"it-{uuid.uuid4().hex}"}
        )
        parts = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.records: dict[str, list[bytes | None]] = {}

    def wait(
        self, predicate: Callable[[dict[str, list[bytes | None]]], bool], timeout_s: float = 30.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for msg in self.consumer.consume(500, 0.2):
                key = msg.key()
                if msg.error() is None and key is not None:
                    self.records.setdefault(key.decode(), []).append(msg.value())
            if predicate(self.records):
                return
        sizes = {k: [v if v is None else len(v) for v in vs] for k, vs in self.records.items()}
        raise AssertionError(f"timed out; record sizes by key: {sizes}")

    def close(self) -> None:
        self.consumer.close()


def _state(value: bytes | None) -> Profile | None:
    if value is None:
        return None
    _person, _merged, state = decode_state(value)
    return Profile.from_json(state)


def _counters_only(value: bytes | None) -> bool:
    profile = _state(value)
    return profile is not None and profile.last_ts is None


@pytest.mark.parametrize("home", ["memory", "disk"])
def test_inactive_anonymous_person_is_removed_and_returns_fresh(
    settings_factory: Callable[..., Settings],
    stages: Stages,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    home: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        segments_group=f"seg-ret-{suffix}",
        segments_state_flush_s=0.5,
        segments_timer_interval_s=0.1,
        segments_inactive_days=1.0,
        state_dir=tmp_path / "state" if home == "disk" else None,
    )
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    clock = Clock()
    stage = stages.start(settings, clock)
    producer = Producer(producer_config(settings, "it-segments-retention"))
    resolved = settings.topic("events.resolved")
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    states = Latest(settings, settings.topic("segments.state"))
    request.addfinalizer(states.close)
    inputs = Latest(settings, settings.topic("audiences.inputs"))
    request.addfinalizer(inputs.close)
    anonymous, known, bouncer = f"anon-{suffix}", f"known-{suffix}", f"bounce-{suffix}"

    # A visitor (anonymous), a customer (known by email) and a bouncer (anonymous, in no segment).
    producer.produce(
        resolved,
        _resolved(anonymous, 1, clock, "Page Viewed", [f"anonymous_id:{anonymous}"]),
        anonymous.encode(),
    )
    producer.produce(
        resolved,
        _resolved(known, 1, clock, "Page Viewed", [f"customer_id:{known}", "email:k@example.com"]),
        known.encode(),
    )
    producer.produce(
        resolved,
        _resolved(bouncer, 1, clock, "Product Viewed", [f"anonymous_id:{bouncer}"]),
        bouncer.encode(),
    )
    producer.flush(10)
    changes.wait(lambda seen: len(seen) >= 2)
    states.wait(lambda records: all(p in records for p in (anonymous, known, bouncer)))
    assert stage.stats.retired == 0

    # A day (and the 1% rounding) of silence: the anonymous persons go, the known one stays.
    clock.offset += DAY_S * 1.01 + 1
    changes.wait(lambda seen: ("visitor", "exited", 2, "retention") in changes.of(anonymous))
    states.wait(lambda records: records[bouncer][-1] is None and _counters_only(records[anonymous][-1]))
    left = _state(states.records[anonymous][-1])
    assert left is not None and left.members == {"visitor": 2}  # only its membership counters
    assert list(left.offsets) == ["r"]  # and the input position it had applied
    assert not left.contacts and not left.totals and left.last_ts is None
    assert states.records[bouncer][-1] is None  # a tombstone
    assert changes.of(known) == [("visitor", "entered", 1, "event")]
    assert stage.stats.retired == 2 and stage.stats.retired_kept_counters == 1
    assert stage.stats.retired_exits == 1
    assert known in stage.profiles and bouncer not in stage.profiles
    # The audience writer forgets the person that held a membership; it never heard of the bouncer.
    inputs.wait(lambda records: anonymous in records)
    told = [decode_input(v) for v in inputs.records[anonymous] if v is not None]
    assert isinstance(told[-1], PersonRemoved)
    assert bouncer not in inputs.records

    # The anonymous visitor comes back: a new profile, whose entry continues the numbering.
    producer.produce(
        resolved,
        _resolved(anonymous, 2, clock, "Page Viewed", [f"anonymous_id:{anonymous}"]),
        anonymous.encode(),
    )
    producer.produce(
        resolved,
        _resolved(bouncer, 2, clock, "Product Viewed", [f"anonymous_id:{bouncer}"]),
        bouncer.encode(),
    )
    producer.flush(10)
    changes.wait(lambda seen: ("visitor", "entered", 3, "event") in changes.of(anonymous))
    states.wait(lambda records: records[bouncer][-1] is not None)
    returned = _state(states.records[bouncer][-1])
    assert returned is not None and returned.last_ts is not None and not returned.members  # a new profile
    assert changes.of(anonymous) == [
        ("visitor", "entered", 1, "event"),
        ("visitor", "exited", 2, "retention"),
        ("visitor", "entered", 3, "event"),
    ]
    assert changes.of(bouncer) == []


@pytest.mark.parametrize("home", ["memory", "disk"])
def test_profiles_saved_before_the_policy_are_removed_after_a_restart_with_it(
    settings_factory: Callable[..., Settings],
    stages: Stages,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    home: str,
) -> None:
    """A profile at rest (no event, no timer) when the policy is set gets its deadline on restore."""
    suffix = uuid.uuid4().hex[:8]
    values = {
        "segments_group": f"seg-ret2-{suffix}",
        "segments_state_flush_s": 0.5,
        "segments_timer_interval_s": 0.1,
        "state_dir": tmp_path / "state" if home == "disk" else None,
    }
    settings = settings_factory(**values)
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    clock = Clock()
    stage = stages.start(settings, clock)
    producer = Producer(producer_config(settings, "it-segments-retention-restart"))
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    person = f"anon-{suffix}"
    producer.produce(
        settings.topic("events.resolved"),
        _resolved(person, 1, clock, "Page Viewed", [f"anonymous_id:{person}"]),
        person.encode(),
    )
    producer.flush(10)
    changes.wait(lambda seen: ("visitor", "entered", 1, "event") in changes.of(person))
    stages.stop(stage)

    clock.offset += 3 * DAY_S
    with_policy = settings.model_copy(update={"segments_inactive_days": 1.0})
    restarted = stages.start(with_policy, clock)
    changes.wait(lambda seen: ("visitor", "exited", 2, "retention") in changes.of(person))
    assert restarted.stats.retired == 1
    assert changes.of(person) == [("visitor", "entered", 1, "event"), ("visitor", "exited", 2, "retention")]
