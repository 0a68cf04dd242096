#!/usr/bin/env python3
"""Example email-tool integration: follow one segment on omniseg's ``segments.changes`` topic.

What an ESP connector does with the stream: every ``entered`` change adds the person's email address to
the segment's list, every ``exited`` change removes it. This script prints those actions as JSON lines
(one per change) instead of calling an ESP API; replace ``handle`` with your ESP's client.

It depends only on confluent-kafka and fastavro (no omniseg code), as a third-party consumer would:

- records are Avro *single-object encoded*: ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint
  of the writer schema, then the Avro body. The fingerprint is checked against the schema files given
  (default: omniseg's ``schemas/segment_change.avsc``); an unknown one stops the consumer with a clear
  message instead of guessing (a newer producer schema: get its .avsc and pass it with ``--schema``);
- the topic is keyed by person id, so one person's changes arrive in order; per person, segment and
  subject they alternate entered / exited;
- a change published twice (a worker restarted after a crash) keeps its ``changeId``: duplicates are
  dropped here. ESP list operations are idempotent, so a replay after a restart of this consumer is
  harmless too;
- offsets are committed after the changes they cover are handled (at-least-once), and Ctrl-C (or
  SIGTERM) finishes the current batch, commits and leaves the group;
- with ``--consent-purpose email``, a person who has not granted that purpose is not added to the list
  (``skip_no_consent``); the record's ``consent`` holds the person's decisions, and a purpose absent
  there follows ``--consent-default`` (set it as omniseg's ``OMNISEG_CONSENT_DEFAULTS``: not granted
  unless configured). Removals always go through;
- a person in the control group of a running use case (``usecases``: the use cases whose audience this
  segment is, each with the person's ``arm``) gets no personalisation from it: not added to the list
  (``skip_control_group``), so the use case's report compares like with like (docs/usecases.md).

Usage::

    python deploy/examples/email_tool_consumer.py --segment prospects
    OMNISEG_KAFKA_BOOTSTRAP=127.0.0.1:19092 EMAIL_TOOL_SEGMENT=lapsed-customers \\
        python deploy/examples/email_tool_consumer.py --idle-exit 10

Exit codes: 0 stopped normally, 1 Kafka error, 2 a record this consumer cannot read (nothing after it
is committed), 64 bad arguments.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import struct
import sys
import time
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from fastavro.schema import fingerprint, to_parsing_canonical_form

MAGIC = b"\xc3\x01"
HEADER_LEN = 10  # magic (2) + fingerprint (8)
DEFAULT_SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "segment_change.avsc"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"  # omniseg's local broker (omniseg dev up)


class UnreadableRecord(Exception):
    """A record that is not a SegmentChange this consumer knows how to read."""


class ChangeDecoder:
    """Avro single-object decoding of SegmentChange records, for the writer schemas given.

    The first schema is the reader schema: records written with an older one are resolved to it.
    """

    def __init__(self, schema_paths: Sequence[Path]) -> None:
        self.writers: dict[bytes, tuple[Path, Any]] = {}
        self.reader: Any = None
        for path in schema_paths:
            parsed = fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
            canonical = to_parsing_canonical_form(parsed)
            fp = struct.pack("<Q", int(fingerprint(canonical, "CRC-64-AVRO"), 16))
            self.writers.setdefault(fp, (path, parsed))
            if self.reader is None:
                self.reader = parsed

    def known(self) -> str:
        return ", ".join(f"{fp.hex()} ({path})" for fp, (path, _) in self.writers.items())

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record in ``data``; raises UnreadableRecord saying why not."""
        if not data or len(data) < HEADER_LEN or data[:2] != MAGIC:
            head = data[:2].hex() if data else "nothing"
            raise UnreadableRecord(f"not an Avro single-object record (header should be c301, got {head})")
        writer = self.writers.get(data[2:HEADER_LEN])
        if writer is None:
            raise UnreadableRecord(
                f"written with schema fingerprint {data[2:HEADER_LEN].hex()}, which this consumer does not "
                f"know (known: {self.known()}). The producer uses another version of "
                "schemas/segment_change.avsc: pass that file with --schema"
            )
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        try:
            reader = None if writer[1] is self.reader else self.reader
            record = fastavro.schemaless_reader(body, writer[1], reader)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise UnreadableRecord(f"corrupt SegmentChange body: {exc!r}") from exc
        if not isinstance(record, dict) or body.tell() != len(data):
            raise UnreadableRecord("corrupt SegmentChange body (trailing bytes)")
        return record


class RecentIds:
    """The newest ``capacity`` change ids. A re-published change follows its original closely (the
    producer resends what it had not saved state for), so a bounded memory catches the duplicates."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, change_id: str) -> bool:
        """Remember ``change_id``; False if it was already there (a duplicate)."""
        if change_id in self._ids:
            self._ids.move_to_end(change_id)
            return False
        self._ids[change_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True


def _iso(value: Any) -> Any:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else value


def granted(record: dict[str, Any], purpose: str | None, default: bool) -> bool:
    """Whether the person of ``record`` has granted ``purpose`` (always, when no purpose is checked)."""
    if purpose is None:
        return True
    for decision in record.get("consent") or ():
        if decision["purpose"] == purpose:
            return bool(decision["granted"])
    return default


def handle(
    record: dict[str, Any], consent_purpose: str | None = None, consent_default: bool = False
) -> dict[str, Any]:
    """What an ESP connector does with one change: add to / remove from the segment's list.

    Here the action is printed as one JSON line; a real connector calls its ESP API at this point
    (and must be idempotent: adding a present address or removing an absent one is a no-op).
    """
    contacts = record.get("contacts") or {}
    email, esp_id = contacts.get("email"), contacts.get("espSubscriberId")
    action = "add_to_list" if record["change"] == "entered" else "remove_from_list"
    if not (email or esp_id):
        action = "none"  # nobody to email: a person known by loyalty card or cookie only
    elif action == "add_to_list" and not granted(record, consent_purpose, consent_default):
        action = "skip_no_consent"
    control = [u["usecaseId"] for u in record.get("usecases") or () if u["arm"] == "control"]
    if action == "add_to_list" and control:
        action = "skip_control_group"
    segment = record["segmentId"]
    line = {
        "action": action,
        "list": f"{segment}/{record['subject']}" if record.get("subject") else segment,
        "change": record["change"],
        "email": email,
        "espSubscriberId": esp_id,
        "personId": record["personId"],
        "segmentId": segment,
        "subject": record.get("subject"),
        "changeId": record["changeId"],
        "seq": record["seq"],
        "at": _iso(record["at"]),
        "trigger": record["trigger"],
        "reason": record["reason"],
        "definitionVersion": record["definitionVersion"],
        "controlOf": control,
    }
    print(json.dumps(line, ensure_ascii=False), flush=True)
    return line


class Follower:
    """The consume -> handle -> commit loop for one segment."""

    def __init__(self, args: argparse.Namespace, decoder: ChangeDecoder) -> None:
        self.args = args
        self.decoder = decoder
        self.recent = RecentIds(args.dedupe_capacity)
        self.stopping = False
        self.handled = 0
        self.duplicates = 0
        self.skipped = 0
        self.assigned_at: float | None = None
        self.last_message_at: float | None = None
        self.consumer = Consumer(
            {
                "bootstrap.servers": args.bootstrap,
                "group.id": args.group,
                "client.id": f"email-tool-{args.segment}",
                # Commit ourselves, after handling: a crash re-delivers, never skips.
                "enable.auto.commit": False,
                "auto.offset.reset": args.start,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                # A short session: a stopped instance's partitions move on quickly, and a new member
                # joins the group in seconds.
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 2000,
            }
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned_at = time.monotonic()
        names = ", ".join(f"{p.topic}[{p.partition}]" for p in partitions)
        log(f"assigned {names or 'no partitions'}")

    def stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            log("stopping already; waiting for the current batch")
        self.stopping = True

    def _idle(self) -> bool:
        if self.args.idle_exit is None or self.assigned_at is None:
            return False  # idle time counts only once partitions are assigned (group joins take time)
        since = max(self.assigned_at, self.last_message_at or 0.0)
        return bool(time.monotonic() - since >= self.args.idle_exit)

    def run(self) -> int:
        log(
            f"following segment {self.args.segment!r} on {self.args.topic} at {self.args.bootstrap} "
            f"(group {self.args.group})"
        )
        self.consumer.subscribe([self.args.topic], on_assign=self._assigned)
        code = 0
        try:
            while not self.stopping:
                if self.args.max_messages is not None and self.handled >= self.args.max_messages:
                    break
                if self._idle():
                    log(f"no new change for {self.args.idle_exit:g} s: stopping (--idle-exit)")
                    break
                messages = self.consumer.consume(num_messages=500, timeout=0.5)
                if messages:
                    self.last_message_at = time.monotonic()
                code = self._batch(messages)
                if code:
                    break
        except KafkaException as exc:
            log(f"Kafka error: {exc}")
            code = 1
        finally:
            self.consumer.close()  # leaves the group at once: partitions move to other instances
        log(
            f"{self.handled} changes of {self.args.segment!r} handled, {self.duplicates} duplicates dropped, "
            f"{self.skipped} changes of other segments skipped"
        )
        return code

    def _batch(self, messages: list[Message]) -> int:
        done: dict[tuple[str, int], int] = {}
        code = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    log(f"fatal Kafka error: {error}")
                    code = 1
                    break
                if error.code() != KafkaError._PARTITION_EOF:
                    log(f"Kafka: {error} (retrying)")
                continue
            if self.args.max_messages is not None and self.handled >= self.args.max_messages:
                break  # not committed: the next run starts here
            where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
            try:
                record = self.decoder.decode(message.value())
            except UnreadableRecord as exc:
                log(f"cannot read {where}: {exc}. Stopping; offsets are committed up to the record before it")
                code = 2
                break
            if record["segmentId"] != self.args.segment:
                self.skipped += 1
            elif not self.recent.add(record["changeId"]):
                self.duplicates += 1
            else:
                handle(record, self.args.consent_purpose, self.args.consent_default == "granted")
                self.handled += 1
            done[(str(message.topic()), int(message.partition() or 0))] = int(message.offset() or 0) + 1
        if done:
            # After handling, synchronously: what is committed has been handled.
            self.consumer.commit(
                offsets=[TopicPartition(t, p, offset) for (t, p), offset in done.items()], asynchronous=False
            )
        return code


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} email-tool: {text}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ
    parser = argparse.ArgumentParser(
        description="Follow one segment on omniseg's segments.changes and print add/remove list actions."
    )
    parser.add_argument(
        "--segment",
        default=env.get("EMAIL_TOOL_SEGMENT"),
        help="Segment id to follow (env EMAIL_TOOL_SEGMENT).",
    )
    parser.add_argument(
        "--bootstrap",
        default=env.get("OMNISEG_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help=f"Kafka bootstrap servers (env OMNISEG_KAFKA_BOOTSTRAP, default {DEFAULT_BOOTSTRAP}).",
    )
    parser.add_argument(
        "--topic",
        default=env.get("EMAIL_TOOL_TOPIC", env.get("OMNISEG_TOPIC_PREFIX", "") + "segments.changes"),
        help="Topic (env EMAIL_TOOL_TOPIC, default OMNISEG_TOPIC_PREFIX + segments.changes).",
    )
    parser.add_argument("--group", help="Consumer group (default email-tool-<segment>).")
    parser.add_argument(
        "--schema",
        type=Path,
        action="append",
        help="SegmentChange .avsc to accept (repeatable; the first is the reader schema; "
        f"default {DEFAULT_SCHEMA}).",
    )
    parser.add_argument(
        "--start",
        choices=("earliest", "latest"),
        default="earliest",
        help="Where a new group starts: earliest replays the history, so the list ends up with the "
        "current members (default); latest follows new changes only.",
    )
    parser.add_argument("--max-messages", type=int, help="Stop after handling this many changes.")
    parser.add_argument("--idle-exit", type=float, help="Stop after this many seconds with no new record.")
    parser.add_argument("--dedupe-capacity", type=int, default=100_000, help="Change ids remembered.")
    parser.add_argument(
        "--consent-purpose",
        help="Add only persons who granted this consent purpose (e.g. email); default: no check.",
    )
    parser.add_argument(
        "--consent-default",
        choices=("granted", "refused"),
        default="refused",
        help="A person who never stated the purpose (default refused, as omniseg's default).",
    )
    args = parser.parse_args(argv)
    if not args.segment:
        parser.error("give --segment (or set EMAIL_TOOL_SEGMENT)")
    args.group = args.group or f"email-tool-{args.segment}"
    args.schema = args.schema or [DEFAULT_SCHEMA]
    for path in args.schema:
        if not path.is_file():
            parser.error(f"--schema {path}: no such file (copy schemas/segment_change.avsc from omniseg)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return 64 if exc.code else 0
    follower = Follower(args, ChangeDecoder(args.schema))
    signal.signal(signal.SIGINT, follower.stop)
    signal.signal(signal.SIGTERM, follower.stop)
    return follower.run()


if __name__ == "__main__":
    sys.exit(main())
