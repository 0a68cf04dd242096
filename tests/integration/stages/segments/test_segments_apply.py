"""`omniseg segments apply` on the real Tansu broker: two applies at once never publish the same version.

The first apply reads the published versions; while it is between reading and writing, a second apply
runs from start to end. The first must then fail with ConcurrentApplyError and publish nothing, and
the topic must hold each (segment, version) once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.domain.segments.lifecycle import Plan
from streams.kafka.reading import partitions_of, read_to_end
from streams.settings import Settings
from streams.stages.segments.definitions import (
    ConcurrentApplyError,
    DefinitionsFollower,
    apply_definitions,
)
from streams.topics import SEGMENT_DEFINITIONS_TOPIC
from streams.wire.codecs import SEGMENT_DEFINITION_CODEC
from tests.integration.stages.segments.segment_files import write_definitions

pytestmark = pytest.mark.integration


def _records(settings: Settings, isolation: str) -> list[tuple[str, int]]:
    """(segmentId, version) of every record on the definitions topic, as a reader with ``isolation``."""
    topic = settings.topic(SEGMENT_DEFINITIONS_TOPIC.name)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "apply-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": isolation,
        }
    )
    seen: list[tuple[str, int]] = []

    def read(msg: object) -> None:
        record = SEGMENT_DEFINITION_CODEC.decode(msg.value())  # type: ignore[attr-defined]
        seen.append((record["segmentId"], record["version"]))

    try:
        start = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions_of(consumer, topic, 30)]
        read_to_end(consumer, start, read, 30)
    finally:
        consumer.close()
    return seen


def _versions(settings: Settings) -> dict[str, int]:
    follower = DefinitionsFollower(settings)
    try:
        follower.load()
        return {segment_id: published.version for segment_id, published in follower.published.items()}
    finally:
        follower.close()


def test_an_apply_overtaken_by_another_publishes_nothing(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    base = {"a.yaml": "id: a\nwhen: {event: Order Completed}\n"}
    apply_definitions(settings, write_definitions(tmp_path / "v1", base))
    assert _versions(settings) == {"a": 1}

    first_dir = write_definitions(
        tmp_path / "first", {"a.yaml": "id: a\nwhen: {event: Order Completed, count: {gte: 2}}\n"}
    )
    second_dir = write_definitions(
        tmp_path / "second", {"a.yaml": "id: a\nwhen: {event: Order Completed, count: {gte: 3}}\n"}
    )
    overtaken: list[str] = []

    def second_runs_now(line: str) -> None:
        # Called by the first apply after it read the topic and planned v2, before it writes.
        if not overtaken:
            overtaken.append(line)
            second = apply_definitions(settings, second_dir)
            assert [(w.segment_id, w.version) for w in second.writes] == [("a", 2)]

    with pytest.raises(ConcurrentApplyError, match="Run it again"):
        apply_definitions(settings, first_dir, progress=second_runs_now)
    assert overtaken == ["changed  a v2"]

    committed = _records(settings, "read_committed")
    assert committed == [("a", 1), ("a", 2)], committed
    follower = DefinitionsFollower(settings)
    try:
        follower.load()
        definition, version = follower.active["a"]
        assert version == 2
        assert "3" in definition.canonical_json(), "the second apply's definition is the live one"
    finally:
        follower.close()

    # Run again, as the message says: it now plans from v2 and publishes v3.
    again = apply_definitions(settings, first_dir)
    assert [(w.segment_id, w.version) for w in again.writes] == [("a", 3)]
    assert _versions(settings) == {"a": 3}
    versions = _records(settings, "read_committed")
    assert len(versions) == len(set(versions)), f"a version was published twice: {versions}"


def test_the_cli_says_to_run_again(
    settings_factory: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The message a user sees when their apply was overtaken (the race itself is proven above)."""
    from streams.cli.segments import segments
    from streams.settings import get_settings
    from streams.stages.segments import definitions as segment_definitions

    settings = settings_factory()
    directory = write_definitions(tmp_path / "defs", {"a.yaml": "id: a\nwhen: {event: Order Completed}\n"})
    other = write_definitions(tmp_path / "other", {"b.yaml": "id: b\nwhen: {event: Product Viewed}\n"})
    real = segment_definitions.apply_definitions
    interleaved: list[str] = []

    def overtaken(*args: Any, **kwargs: Any) -> Plan:
        def interleave(line: str) -> None:
            if not interleaved:
                interleaved.append(line)
                real(settings, other)  # a second apply, start to end, from another "terminal"

        kwargs["progress"] = interleave
        return real(*args, **kwargs)

    monkeypatch.setattr(segment_definitions, "apply_definitions", overtaken)
    env = {"OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "OMNISEG_TOPIC_PREFIX": settings.topic_prefix}
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(segments, ["apply", str(directory)], env=env)
    finally:
        get_settings.cache_clear()
    assert interleaved, "the apply never reached the point where it writes"
    assert result.exit_code == 1, result.output
    assert "another `omniseg segments apply` started" in result.output
    assert "Run it again" in result.output
    assert _versions(settings) == {"b": 1}, "only the second apply was published"


def _live(settings: Settings) -> dict[str, bool]:
    follower = DefinitionsFollower(settings)
    try:
        follower.load()
        return {segment_id: not published.deleted for segment_id, published in follower.published.items()}
    finally:
        follower.close()


def test_apply_removes_live_segments_only_with_prune_and_dry_run_shows_what_it_would_remove(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    from streams.cli.segments import segments
    from streams.settings import get_settings

    settings = settings_factory()
    both = write_definitions(
        tmp_path / "both",
        {
            "a.yaml": "id: a\nwhen: {event: Order Completed}\n",
            "b.yaml": "id: b\nwhen: {event: Product Viewed}\n",
        },
    )
    only_a = write_definitions(tmp_path / "only_a", {"a.yaml": "id: a\nwhen: {event: Order Completed}\n"})
    env = {"OMNISEG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "OMNISEG_TOPIC_PREFIX": settings.topic_prefix}

    def cli(*args: str) -> str:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(segments, ["apply", "--no-backfill", *args], env=env)
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        return result.output

    cli(str(both))
    assert _live(settings) == {"a": True, "b": True}

    # A directory with only some segments leaves the others live, and says so.
    out = cli(str(only_a))
    assert "kept     b" in out and "--prune removes" in out
    assert _live(settings) == {"a": True, "b": True}

    # A dry run with --prune lists the removal and publishes nothing.
    out = cli(str(only_a), "--prune", "--dry-run")
    assert "removed  b v2" in out and "dry run: nothing published" in out
    assert _live(settings) == {"a": True, "b": True}

    out = cli(str(only_a), "--prune")
    assert "removed  b v2" in out
    assert _live(settings) == {"a": True, "b": False}
