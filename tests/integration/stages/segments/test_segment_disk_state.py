"""Profiles on local disk (``state_dir``), on the real broker: more persons than the cache holds enter
and expire on time, a restart on the same disk reads only what was written since its position, and a
changelog that is not the one the store followed makes it read the partition in full."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from streams.state.profile_table import DiskProfiles
from tests.integration.stages.segments.segment_files import write_definitions
from tests.integration.stages.segments.test_segment_stage import (
    DEFINITIONS,
    HOUR_S,
    Changes,
    Clock,
    Stages,
    _resolved,
    stages,  # noqa: F401  (the fixture)
)

pytestmark = pytest.mark.integration

_PERSONS = 2_500
_CACHE = 1_000


def _entered(changes: Changes, kind: str) -> int:
    return sum(1 for c in changes.seen if c["segmentId"] == "recent-buyer" and c["change"] == kind)


def test_more_persons_than_the_cache_and_a_restart_on_the_same_disk(
    settings_factory: Callable[..., Settings],
    stages: Stages,  # noqa: F811
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    group = f"seg-{suffix}"
    state_dir = tmp_path / "state"
    settings = settings_factory(
        segments_group=group,
        segments_state_flush_s=0.2,
        segments_timer_interval_s=0.1,
        state_dir=state_dir,
        segments_cache_profiles=_CACHE,
    )
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    clock = Clock()
    stage = stages.start(settings, clock)
    producer = Producer(producer_config(settings, "it-segments-disk"))
    resolved = settings.topic("events.resolved")
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    persons = [f"p{n:05d}-{suffix}" for n in range(_PERSONS)]
    for n, person in enumerate(persons):
        producer.produce(resolved, _resolved(person, 1, clock), person.encode())
        if n % 500 == 0:
            producer.poll(0)
    assert producer.flush(10) == 0
    changes.wait(lambda seen: _entered(changes, "entered") == _PERSONS, timeout_s=60)
    changes.settle(1.5)  # the last checkpoint is acknowledged and written to the store
    table = stage.profiles
    assert isinstance(table, DiskProfiles)
    assert len(table) <= _CACHE, "the cache holds at most its size once the profiles are written"

    # Every window expires on the clock, though most profiles are only on disk.
    clock.offset += HOUR_S + 1
    changes.wait(lambda seen: _entered(changes, "exited") == _PERSONS, timeout_s=60)
    assert table.loads >= _PERSONS - _CACHE, "the evicted profiles were read back from disk to expire"
    exits = {c["personId"]: c for c in changes.seen if c["change"] == "exited"}
    assert set(exits) == set(persons) and all(c["trigger"] == "timer" for c in exits.values())
    changes.settle(1.5)

    # A restart on the same disk reads only the records written since its position: none.
    stages.stop(stage)
    restarted = stages.start(settings, clock)
    assert restarted.stats.restored_records == 0, restarted.stats
    producer.produce(resolved, _resolved(persons[0], 2, clock), persons[0].encode())
    assert producer.flush(10) == 0
    changes.wait(lambda seen: ("recent-buyer", "entered", 3, "event") in changes.of(persons[0]))
    changes.settle(1.0)
    seqs: dict[str, list[int]] = {}
    for change in changes.seen:
        seqs.setdefault(change["personId"], []).append(change["seq"])
    assert all(s == list(range(1, len(s) + 1)) for s in seqs.values()), "nothing published twice"

    # The same store under another changelog (a recreated topic, here another prefix): it cannot
    # trust its entries, so it reads that changelog in full and forgets what it had.
    stages.stop(restarted)
    other = settings_factory(
        segments_group=group,
        segments_state_flush_s=0.2,
        segments_timer_interval_s=0.1,
        state_dir=state_dir,
        segments_cache_profiles=_CACHE,
    )
    apply_definitions(other, write_definitions(tmp_path / "segments-other", DEFINITIONS))
    fresh = stages.start(other, clock)
    assert persons[0] not in fresh.profiles, "entries of a changelog the store no longer follows are gone"
    assert fresh.step.store.restored_full, "the partitions were read in full"
