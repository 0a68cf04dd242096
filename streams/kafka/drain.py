"""Waiting until a consumer group has processed every record written before a moment.

A group has processed a partition up to ``since`` when its committed offset is at or past the first
record stamped ``since`` or later (``offsets_for_times``), or, when no such record exists yet, when
nothing follows its committed offset (the fetch reports the partition's end right there). No
watermark is used: Tansu's ListOffsets can answer too low
(docs/decisions/0009-end-of-partition-from-the-fetch.md). Record timestamps are the producers'
clocks, so ``since`` should allow for their skew.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from confluent_kafka import Consumer, KafkaError, TopicPartition

from streams.kafka.config import consumer_config
from streams.kafka.reading import partitions_of
from streams.settings import Settings

_TIMEOUT_S = 30.0
_PROBE_S = 2.0


class NotDrained(TimeoutError):
    """A group has not processed its input up to the moment in time; the message names it."""


def _probe_at_end(probe: Consumer, tp: TopicPartition) -> bool:
    """Whether nothing follows ``tp.offset`` in its partition (the fetch says end of partition)."""
    probe.assign([tp])
    deadline = time.monotonic() + _PROBE_S
    try:
        while time.monotonic() < deadline:
            for msg in probe.consume(1, 0.2):
                error = msg.error()
                if error is None:
                    return False
                if error.code() == KafkaError._PARTITION_EOF:
                    return True
        return False
    finally:
        probe.unassign()


def wait_processed(
    settings: Settings,
    group: str,
    topics: Sequence[str],
    since_ms: int,
    timeout_s: float,
    what: str,
    progress: Callable[[str], None] = lambda _line: None,
) -> bool:
    """Return once ``group`` has processed every record of ``topics`` stamped before ``since_ms``;
    raise :class:`NotDrained` after ``timeout_s`` (``what`` names the stage in the message).

    Returns False, at once, when the group has never committed an offset on any of the topics: the
    stage is not deployed (or has never had input), so there is nothing to wait for."""
    offsets = Consumer(consumer_config(settings, group, "omniseg-drain-offsets"))
    probe = Consumer(
        consumer_config(
            settings, f"{group}.drain-probe", "omniseg-drain-probe", **{"enable.partition.eof": True}
        )
    )
    try:
        wanted = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in partitions_of(probe, topic, _TIMEOUT_S)
        ]
        firsts = {
            (tp.topic, tp.partition): tp.offset
            for tp in probe.offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, since_ms) for tp in wanted], _TIMEOUT_S
            )
        }
        deadline = time.monotonic() + timeout_s
        reported = time.monotonic()
        pending = list(wanted)
        if all(tp.offset < 0 for tp in offsets.committed(pending, _TIMEOUT_S)):
            return False
        while True:
            committed = {
                (tp.topic, tp.partition): max(tp.offset, 0) for tp in offsets.committed(pending, _TIMEOUT_S)
            }
            left = []
            for tp in pending:
                at = committed[(tp.topic, tp.partition)]
                first = firsts[(tp.topic, tp.partition)]
                if first >= 0:
                    if at < first:
                        left.append(tp)
                elif not _probe_at_end(probe, TopicPartition(tp.topic, tp.partition, at)):
                    left.append(tp)
            if not left:
                return True
            pending = left
            now = time.monotonic()
            names = ", ".join(sorted({f"{tp.topic}[{tp.partition}]" for tp in left}))
            if now >= deadline:
                raise NotDrained(
                    f"{what} (consumer group {group}) has not processed {names} within {timeout_s:.0f}s: "
                    "is the worker running?"
                )
            if now - reported >= 5.0:
                progress(f"waiting for {what} to process {names}")
                reported = now
            time.sleep(0.2)
    finally:
        offsets.close()
        probe.close()
