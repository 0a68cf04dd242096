"""What each sink asks of its consumer: the audiences sink must not wait on the broker like the others."""

from __future__ import annotations

from streams.kafka.config import SINK_CONSUMER, STAGE_FETCH_WAIT_MS
from streams.settings import Settings
from streams.sinks.audiences import AudiencesSink
from streams.sinks.events import HistorySink


def test_the_audiences_sink_fetches_with_the_stages_short_wait_and_its_own_batch_interval() -> None:
    settings = Settings(audiences_sink_flush_interval_s=0.1, sink_flush_interval_s=0.5)
    spec = AudiencesSink(settings).spec
    assert spec.consumer["fetch.wait.max.ms"] == STAGE_FETCH_WAIT_MS
    assert spec.consumer["fetch.max.bytes"] == SINK_CONSUMER["fetch.max.bytes"]
    assert spec.wait_s == 0.1


def test_the_other_sinks_keep_the_long_fetch_wait_of_big_batches() -> None:
    spec = HistorySink(Settings()).spec
    assert spec.consumer["fetch.wait.max.ms"] == SINK_CONSUMER["fetch.wait.max.ms"] > STAGE_FETCH_WAIT_MS
