"""A segment stage restored from state older than the changes it had published (a crash between the
two) takes those changes over once the replay of its partitions is done, so that state and published
changes agree: an entry whose window passed meanwhile exits, one that still holds is not published
twice (not even while a long replay outlasts many checkpoints), an exit is not undone."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streams.domain.segments.changes import make_change
from streams.domain.segments.profile import Profile
from streams.kafka.config import producer_config
from streams.settings import Settings
from streams.stages.segments.definitions import apply_definitions
from streams.wire.segments import encode_changes
from tests.integration.stages.segments.segment_files import write_definitions
from tests.integration.stages.segments.test_segment_stage import (
    DEFINITIONS,
    HOUR_S,
    Changes,
    Clock,
    Stages,
    _resolved,
)

pytestmark = pytest.mark.integration

_VIEWS_BEFORE_ORDER = 5_000


@pytest.fixture
def stages() -> Iterator[Stages]:
    running = Stages()
    yield running
    for stage, thread in list(running.threads.values()):
        stage.stop()
        thread.join(60)
    assert not running.failures, f"a segment stage crashed: {running.failures!r}"


def _published(person: str, entered: bool, seq: int, at_ms: int) -> bytes:
    """What a crashed owner had published for ``person`` after its last state save."""
    change = make_change(
        person, "recent-buyer", None, entered, seq, at_ms, "event", "entered: an order", f"{person}-1", 1
    )
    return encode_changes([change], Profile(person), at_ms)[0]


def test_a_restore_takes_over_changes_published_after_the_saved_state(
    settings_factory: Callable[..., Settings],
    stages: Stages,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        segments_group=f"seg-{suffix}", segments_state_flush_s=0.05, segments_timer_interval_s=0.1
    )
    apply_definitions(settings, write_definitions(tmp_path / "segments", DEFINITIONS))
    clock = Clock()
    producer = Producer(producer_config(settings, "it-segments-recovery"))
    resolved, changes_topic = settings.topic("events.resolved"), settings.topic("segments.changes")
    stale, holding = f"person-stale-{suffix}", f"person-holding-{suffix}"
    # The crashed owner: it read one order of each person and published `entered` for both, but
    # saved no state and committed no offset. The stale person's order was two hours ago.
    old_clock = Clock()
    old_clock.offset = -2 * HOUR_S
    producer.produce(resolved, _resolved(stale, 1, old_clock), stale.encode())
    producer.produce(changes_topic, _published(stale, True, 1, int(old_clock() * 1000)), stale.encode())
    # Views ahead of the holding person's order make the replay outlast many checkpoints: the profiles
    # that took changes over are evaluated only once the replay reached the end of their partitions.
    for n in range(_VIEWS_BEFORE_ORDER):
        producer.produce(resolved, _resolved(holding, 100 + n, clock, "Product Viewed"), holding.encode())
        producer.poll(0)
    producer.produce(resolved, _resolved(holding, 1, clock), holding.encode())
    producer.produce(changes_topic, _published(holding, True, 1, int(clock() * 1000)), holding.encode())
    assert producer.flush(10) == 0
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    changes.wait(lambda seen: len(seen) == 2)

    stage = stages.start(settings, clock)  # the new owner: restores, replays both orders
    changes.wait(lambda seen: any(c["personId"] == stale and c["change"] == "exited" for c in seen))
    changes.settle(3)
    assert changes.of(stale) == [
        ("recent-buyer", "entered", 1, "event"),
        ("recent-buyer", "exited", 2, changes.of(stale)[1][3]),
    ], "the entry whose window passed must exit, with the next seq"
    assert changes.of(holding) == [("recent-buyer", "entered", 1, "event")], "nothing published twice"
    assert stage.stats.recovered == 2
    profile = stage.profiles[holding]
    assert profile.is_member("recent-buyer") and profile.members["recent-buyer"] == 1

    # The window of the holding person then expires as usual, from the state that took it over.
    clock.offset += HOUR_S + 1
    changes.wait(lambda seen: any(c["personId"] == holding and c["change"] == "exited" for c in seen))
    assert changes.of(holding)[-1][:3] == ("recent-buyer", "exited", 2)
