"""A new segment over history, on the real broker, ClickHouse 18.16 and running workers.

Events go in while the workers know only an older definition; then a definition that needs a new
behaviour feature (Product Viewed, exactly 2 in 30 days) is applied and backfilled from ClickHouse:

- a person with 2 views in the window (and one older than it) enters with one ``backfill`` change;
- a person with 1 view in history and 1 counted live after the definition went live, but before the
  backfill's cut, enters too: the live one is not counted twice (3 views would not be "exactly 2");
- a person with 1 view stays out;
- a run stopped after its first page resumes where it stopped, with no change published twice;
- a repeated backfill publishes nothing new, and both runs are recorded with their figures.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from streams.domain.events import Event
from streams.kafka.config import producer_config
from streams.kafka.runtime import StageRuntime
from streams.settings import Settings
from streams.sinks.events import HistorySink
from streams.sinks.identity import IdentitySink
from streams.stages.segments.backfill import BackfillJob, clickhouse_client, load_runs
from streams.stages.segments.definitions import apply_definitions
from streams.stages.segments.stage import SegmentStage
from streams.topics import RESOLVED_TOPIC
from streams.wire.codecs import EVENT_CODEC
from streams.wire.identity import event_body, resolved_event
from tests.integration.stages.segments.segment_files import write_definitions
from tests.integration.stages.segments.test_segment_stage import Changes

pytestmark = pytest.mark.integration

OLD = {"buyers.yaml": "id: buyers\nwhen: {event: Order Completed}\n"}
NEW = {
    **OLD,
    "viewed-twice.yaml": "id: viewed-twice\nwhen: {event: Product Viewed, window: 30d, count: {eq: 2}}\n",
}


class Running:
    """Stages in threads; all stopped and joined at the end, even when the test fails."""

    def __init__(self) -> None:
        self.stages: list[tuple[StageRuntime, threading.Thread]] = []
        self.failures: list[BaseException] = []

    def start(self, stage: StageRuntime) -> Any:
        def run() -> None:
            try:
                stage.run()
            except BaseException as exc:
                self.failures.append(exc)
                raise

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.stages.append((stage, thread))
        return stage


@pytest.fixture
def running() -> Iterator[Running]:
    found = Running()
    yield found
    for stage, _thread in found.stages:
        stage.stop()
    for _, thread in found.stages:
        thread.join(60)
        assert not thread.is_alive(), "a stage did not stop"
    assert not found.failures, f"a stage crashed: {found.failures!r}"


def _wait(condition: Callable[[], bool], what: str, running: Running, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert not running.failures, running.failures
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Source:
    """Sends an event the way the pipeline carries it: raw on events.web (history sink -> events) and
    resolved to its person on events.resolved (identity sink -> event_persons, and the segment stage)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings, "it-backfill"))
        self.sent = 0

    def send(self, person: str, n: int, name: str, at: datetime) -> None:
        event = Event.model_validate(
            {
                "messageId": f"{person}-{n}",
                "type": "track",
                "event": name,
                "userId": person,
                "context": {"channel": "web"},
                "timestamp": at,
                "receivedAt": at,
            }
        )
        raw = EVENT_CODEC.encode(event.to_avro())
        self.producer.produce(self.settings.channel_topic("web"), raw, person.encode())
        resolved = resolved_event(person, [f"customer_id:{person}"], int(time.time() * 1000), event_body(raw))
        self.producer.produce(self.settings.topic(RESOLVED_TOPIC.name), resolved, person.encode())
        self.sent += 1

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


def test_a_new_segment_is_backfilled_from_history_once(
    settings_factory: Callable[..., Settings],
    running: Running,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = settings_factory(
        segments_group=f"seg-{suffix}",
        segments_state_flush_s=0.5,
        segments_timer_interval_s=0.1,
        sink_flush_interval_s=0.2,
    )
    apply_definitions(settings, write_definitions(tmp_path / "old", OLD))
    stage: SegmentStage = running.start(SegmentStage(settings))
    assert stage.ready.wait(60), f"the segment stage did not get its partitions {running.failures!r}"
    history, identity = running.start(HistorySink(settings)), running.start(IdentitySink(settings))
    changes = Changes(settings)
    request.addfinalizer(changes.consumer.close)
    twice, live, once = f"twice-{suffix}", f"live-{suffix}", f"once-{suffix}"
    now = datetime.now(UTC)
    source = Source(settings)
    source.send(twice, 1, "Product Viewed", now - timedelta(days=40))  # outside the 30-day window
    source.send(twice, 2, "Product Viewed", now - timedelta(days=5))
    source.send(twice, 3, "Product Viewed", now - timedelta(days=3))
    source.send(twice, 4, "Order Completed", now - timedelta(days=3))
    source.send(live, 1, "Product Viewed", now - timedelta(days=4))
    source.send(once, 1, "Product Viewed", now - timedelta(days=2))
    source.flush()
    _wait(lambda: stage.stats.events == source.sent, "the segment stage", running)
    _wait(lambda: identity.stats.rows.get("event_persons", 0) >= source.sent, "event_persons", running)
    _wait(lambda: history.stats.rows.get("events", 0) >= source.sent, "events", running)
    changes.wait(lambda seen: any(c["segmentId"] == "buyers" for c in seen))

    # The new definition goes live; a view arrives live before the backfill starts.
    before = BackfillJob.active_definitions(settings)
    apply_definitions(settings, write_definitions(tmp_path / "new", NEW))
    _wait(lambda: bool(stage.step.engine.backfilling), "the workers to apply the definition", running)
    source.send(live, 2, "Product Viewed", datetime.now(UTC))
    source.flush()
    _wait(lambda: stage.stats.events == source.sent, "the live view", running)
    assert not [c for c in changes.seen if c["segmentId"] == "viewed-twice"], "nothing before the backfill"

    # The first attempt stops after its first page (of one event each); the second resumes it.
    lines: list[str] = []

    def stop_after_first_page(line: str) -> None:
        lines.append(line)
        if " page 1/" in line and not any("resuming" in seen for seen in lines):
            raise KeyboardInterrupt

    crashing = BackfillJob(settings, progress=stop_after_first_page, settle_s=0, wait_s=60, page_rows=1)
    with pytest.raises(KeyboardInterrupt):
        crashing.run(before=before)
    (stopped,) = load_runs(clickhouse_client(settings))
    assert (stopped.status, stopped.pages_done, stopped.pages) == ("running", 1, 5), lines
    job = BackfillJob(settings, progress=lines.append, settle_s=0, wait_s=60)
    first = job.run(before=before)
    assert first is not None and first.status == "done", lines
    assert first.run_id == stopped.run_id and any("resuming at page 2 of 5" in line for line in lines)
    assert first.segments == ("viewed-twice",)
    # 2 + 2 + 1 views: the 40-day-old view and the order are not read
    assert (first.persons, first.events_read) == (3, 5), lines
    changes.wait(lambda seen: len([c for c in seen if c["segmentId"] == "viewed-twice"]) >= 2)
    changes.settle(2.0)
    entered = sorted(
        (c["personId"], c["change"], c["seq"], c["trigger"])
        for c in changes.seen
        if c["segmentId"] == "viewed-twice"
    )
    assert entered == sorted([(twice, "entered", 1, "backfill"), (live, "entered", 1, "backfill")])

    # Again: every part is ignored by its owner, and the run says so in its figures only.
    again = job.run(segment_ids=["viewed-twice"])
    assert again is not None and again.run_id != first.run_id and again.status == "done"
    _wait(lambda: stage.stats.backfill_parts >= 6, "the repeated parts", running)
    changes.settle(2.0)
    assert len([c for c in changes.seen if c["segmentId"] == "viewed-twice"]) == 2
    runs = {run.run_id: run for run in load_runs(clickhouse_client(settings))}
    assert {runs[first.run_id].status, runs[again.run_id].status} == {"done"}
    assert runs[first.run_id].events_read == 5 and runs[first.run_id].pages_done == runs[first.run_id].pages
    assert any("events/s" in line for line in lines)

    # What a user sees of the runs.
    from streams.cli.segments import segments
    from streams.settings import get_settings

    env = {
        "OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "OMNISEG_TOPIC_PREFIX": settings.topic_prefix,
        "OMNISEG_CLICKHOUSE_HOST": settings.clickhouse_host,
        "OMNISEG_CLICKHOUSE_PORT": str(settings.clickhouse_port),
        "OMNISEG_CLICKHOUSE_DATABASE": settings.clickhouse_database,
    }
    get_settings.cache_clear()
    try:
        status = CliRunner().invoke(segments, ["backfill", "status"], env=env)
        unknown = CliRunner().invoke(segments, ["backfill", "run", "--segment", "nope"], env=env)
    finally:
        get_settings.cache_clear()
    assert status.exit_code == 0, status.output
    assert first.run_id in status.output and again.run_id in status.output and "events/s" in status.output
    assert unknown.exit_code == 1 and "no live segment nope" in unknown.output, unknown.output
